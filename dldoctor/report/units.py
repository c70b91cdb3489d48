"""Human-readable numbers for the terminal renderers."""
from __future__ import annotations


def si(n: float | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suf}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def nbytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for div, suf in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suf}"
    return f"{n} B"


def shape(s: list[list[int]] | None) -> str:
    if not s:
        return "-"
    parts = ["×".join(str(d) for d in one) if one else "scalar" for one in s]
    return ", ".join(parts)
