"""The rules a run skipped, read back from a report's diagnostics, told in one line or listed.

`api/judge.py` files each group of skipped rules as one info diagnostic (`where: "rules"`):
`rules skipped (needs loss: the loss is unknown: pass --loss ...): OUT001-OUT005, OUT007`. The terminal
output does not show these lines (they are the same on every plain run); the commands print one summary line on
stderr instead, `12 rules skipped: 5 need a loss (--loss), 4 need a probe (dldoctor probe) — --show-skipped lists
them`, and the full list with `--show-skipped`. JSON keeps every diagnostic as it is.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

__all__ = ["is_skipped", "skipped_lines", "skipped_summary", "expand_codes"]

_PREFIX = "rules skipped ("
_NEEDS = re.compile(r"needs ([a-z_]+(?: and [a-z_]+)*)(?=:)")
_RANGE = re.compile(r"^([A-Z]+)(\d+)-([A-Z]+)(\d+)$")

# What a fact is, in the words of the summary line, and how to get it.
_NEED = {
    "loss": "a loss (--loss)",
    "probe": "a probe (dldoctor probe)",
    "profile": "a profile (check --profile)",
    "onnx": "an ONNX model",
    "graph": "a traced graph",
    "head": "a head to judge (--head NAME)",
    "weights": "the weights",
    "training": "a module",
    "baseline": "a baseline report (budget.baseline-report)",
}


def is_skipped(d: Any) -> bool:
    """Is this diagnostic a group of skipped rules (as `api/judge.py` files them)?"""
    return d.level == "info" and d.where == "rules" and d.message.startswith(_PREFIX)


def expand_codes(text: str) -> list[str]:
    """"ARC005, TRN001-TRN003" -> ["ARC005", "TRN001", "TRN002", "TRN003"] (the ranges of `code_ranges`)."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        m = _RANGE.match(part)
        if m and m.group(1) == m.group(3) and int(m.group(2)) <= int(m.group(4)):
            width = len(m.group(2))
            out += [f"{m.group(1)}{i:0{width}d}" for i in range(int(m.group(2)), int(m.group(4)) + 1)]
        elif part:
            out.append(part)
    return out


def _split(message: str) -> tuple[str, list[str]]:
    """A skipped-rules message -> (its reason, its codes)."""
    body = message[len(_PREFIX):]
    reason, _, codes = body.rpartition("): ")
    return reason, expand_codes(codes)


def _need(reason: str) -> str:
    """"needs loss: the loss is unknown ..." -> "a loss (--loss)"; the first fact a group needs, in words."""
    m = _NEEDS.search(reason)
    if not m:
        return "something not collected"
    first = m.group(1).split(" and ")[0]
    return _NEED.get(first, first)


def skipped_summary(reports: Iterable[Any]) -> str | None:
    """One line for all the reports: `12 rules skipped: 5 need a loss (--loss), 7 need a probe (dldoctor probe)`
    (a rule skipped on several models counted once, under the first reason); None when nothing was skipped."""
    by_need: dict[str, int] = {}
    seen: set[str] = set()  # a rule skipped on several models is one rule
    for r in reports:
        for d in r.diagnostics:
            if not is_skipped(d):
                continue
            reason, codes = _split(d.message)
            fresh = [c for c in codes if c not in seen]
            seen.update(fresh)
            if fresh:
                need = _need(reason)
                by_need[need] = by_need.get(need, 0) + len(fresh)
    total = sum(by_need.values())
    if not total:
        return None
    parts = ", ".join(f"{n} need{'s' if n == 1 else ''} {need}"
                      for need, n in sorted(by_need.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total} rule{'s' if total != 1 else ''} skipped: {parts} — --show-skipped lists them"


def skipped_lines(reports: Iterable[Any], with_path: bool = True) -> list[str]:
    """Every skipped group of every report as it was filed, one line each (`PATH: rules skipped (...): CODES`)."""
    out = []
    for r in reports:
        for d in r.diagnostics:
            if is_skipped(d):
                out.append(f"{r.model.path}: {d.message}" if with_path else d.message)
    return out
