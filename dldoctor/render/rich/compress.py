"""Terminal output of `dldoctor compress`: the Pareto table of measured variants and the recommendation."""
from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from dldoctor.render.rich.fit import Col, fit_table
from dldoctor.report.units import nbytes
from dldoctor.render.text import plain
from dldoctor.report.compress_types import CompressResult, Variant

STYLE = {"recommended": "bold green", "kept": "green", "rejected": "yellow", "failed": "red", "original": "bold"}
VERDICT = {"faster": "green", "slower": "yellow", "measurement error": "red", "no measurable difference": "dim"}


def _row(v: Variant) -> list:
    f = v.fidelity
    fid = "" if v.name == "original" else (
        f"cos {f.cosine:.4f}" if f.cosine is not None else "n/a") + (f", top-1 {f.top1:.1%}" if f.top1 is not None else "")
    return [plain(v.name + (" ◆" if v.pareto else ""), style=STYLE.get(v.status, "")),
            plain(v.status, style=STYLE.get(v.status, "")),
            "n/a" if v.size_bytes is None else nbytes(v.size_bytes),
            "" if v.size_ratio is None else f"{v.size_ratio:.2f}×",
            "n/a" if v.p50 is None else f"{v.p50 * 1e3:.3g}",
            "" if v.speedup is None else plain(f"{v.speedup:.2f}×", style="" if _acts(v) else "dim"),
            "" if v.timing is None or v.timing.ci_low is None else f"{v.timing.ci_low:.2f}–{v.timing.ci_high:.2f}×",
            "" if v.timing is None else plain(v.timing.verdict, style=VERDICT.get(v.timing.verdict, "")), fid]


# at 80 columns the least useful go first: the size ratio, the absolute p50 (a busy machine inflates it), the size
COLS = [Col("variant", keep=100), Col("status", keep=95), Col("size", keep=60, justify="right"),
        Col("smaller", keep=40, justify="right"), Col("p50 ms", keep=50, justify="right"),
        Col("speedup", keep=90, justify="right"), Col("95% CI", keep=88, justify="right"),
        Col("timing", keep=86, shorten="end", min_width=8), Col("fidelity", keep=70, shorten="end", min_width=10)]


def _acts(v: Variant) -> bool:
    return v.timing is None or v.timing.verdict == "faster"


def _why(v: Variant) -> str:
    """Why rejected or failed; for a timing that is not "faster", its reason (interval, budget, bound)."""
    parts = [v.reason] if v.reason else []
    if v.timing is not None and v.timing.verdict != "faster" and v.timing.reason and v.status != "failed":
        parts.append(f"timing: {v.timing.reason}")
    return "; ".join(parts)


def render_compress_rich(res: CompressResult, console: Console) -> None:
    rows = [res.original, *res.variants]
    t = fit_table(COLS, [_row(v) for v in rows], console.width,
                  title=plain(f"variants, measured against the original in the same run ({res.device}, batch 1"
                              + (f", the original in {res.precision})" if res.precision != "fp32" else ")")),
                  header_style="bold", title_justify="left")
    parts: list = [t]
    why = Text()
    for v in rows:  # why rejected, failed or not faster: prose under the table, one line per variant
        text = _why(v)
        if text:
            why.append_text(plain(f"{v.name}: ", style=STYLE.get(v.status, "")))
            why.append_text(plain(text, style="dim"))
            why.append("\n")
    why.rstrip()
    if why.plain:
        parts.append(why)
    rec = next((v for v in res.variants if v.name == res.recommended), None)
    if rec is not None:
        parts.append(plain(f"recommended ({'fastest' if res.optimize == 'latency' else 'smallest'} within the "
                           f"{res.max_drop} fidelity budget): {rec.name} -> {rec.path}", style="bold green"))
    parts.append(Text("◆ on the size / latency / fidelity Pareto front", style="dim"))
    for n in res.notes:
        parts.append(plain(f"note: {n}", style="yellow"))
    parts.append(plain(f"written to {res.out_dir} (the input was not touched)", style="dim"))
    console.print(Group(*parts))
