"""Terminal output of `dldoctor probe`: the diagnoses first, then a compact per-layer table with inline bars."""
from __future__ import annotations

import math

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dldoctor.render.rich.fit import Col, fit_table
from dldoctor.report.probe_types import ProbeResult
from dldoctor.render.rich.report import diagnostics, findings_table
from dldoctor.render.text import markup, plain
from dldoctor.report.types import Report

BAR = 8


def _bar(frac: float | None, style: str) -> Text:
    """A share in [0, 1] as an inline bar; 'n/a' when it was not measured (never a silent 0)."""
    if frac is None or not math.isfinite(frac):
        return Text("n/a", style="dim")
    n = round(max(0.0, min(1.0, frac)) * BAR)
    t = Text("█" * n, style=style)
    t.append("·" * (BAR - n), style="dim")
    t.append(f"{frac:5.0%}")
    return t


def _log_bar(v: float | None, lo: float = 1e-8, hi: float = 1e2) -> Text:
    """A positive value on a log scale from lo to hi, with the number."""
    if v is None or not math.isfinite(v):
        return Text("n/a", style="dim")
    if v <= 0:
        return Text("0".rjust(BAR + 8), style="red")
    f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    n = round(max(0.0, min(1.0, f)) * BAR)
    t = Text("▮" * n, style="cyan")
    t.append("·" * (BAR - n), style="dim")
    t.append(f" {v:7.1e}")
    return t


def _last(xs: list) -> float | None:
    for x in reversed(xs):
        if x is not None:
            return x
    return None


def _summary(r: Report, p: ProbeResult) -> Panel:
    c = p.config
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold")
    g.add_column()
    g.add_row("model", f"{markup(r.model.path)}  [dim]({markup(r.model.format)})[/]")
    if c.get("steps") is None:  # the forward failed before the run was set up: no settings to show
        g.add_row("run", plain("did not start: the model failed before the first step", style="red"))
    else:
        g.add_row("run", plain(f"{c.get('steps')} steps of {c.get('optimizer')} at lr {c.get('lr')}, loss "
                               f"{c.get('loss')}, batch {c.get('batch_size')}, seed {c.get('seed')}, "
                               f"{c.get('device')}; data: {c.get('data')}"))
    a, b, e = p.initial_loss, p.final_loss, p.expected_initial_loss
    loss = f"{'n/a' if a is None else f'{a:.4g}'} → {'n/a' if b is None else f'{b:.4g}'}"
    if e is not None:
        loss += f"  [dim](chance: {e:.3g})[/]"
    g.add_row("loss", loss)
    if p.error:
        g.add_row("stopped", plain(p.error, style="red"))
    ind = p.independence or {}
    if ind.get("checked"):
        g.add_row("samples", "[red]mixed across the batch[/]" if ind.get("mixed") else "independent (eval mode)")
    att = p.attribution or {}
    if att:
        if att.get("status") == "complete":
            cov = att.get("coverage")
            g.add_row("attribution", plain(f"{att.get('method')}: 90% of it on "
                                           f"{'n/a' if cov is None else f'{cov:.0%}'} of the input"))
        else:
            g.add_row("attribution", plain(f"unavailable: {att.get('reason')}", style="dim"))
    if p.seconds is not None:
        g.add_row("time", f"{p.seconds:.2f} s")
    return Panel(g, title="dldoctor probe", title_align="left")


def layer_table(p: ProbeResult, limit: int = 60, width: int | None = None) -> Table | None:
    """One row per leaf module in forward order: activation statistics and the gradient of its weight."""
    if not p.layers:
        return None
    weight = {}
    for q in p.params:
        if q.name.rsplit(".", 1)[-1].startswith("weight") and q.module not in weight:
            weight[q.module] = q
    sat = any(lp.type in ("Sigmoid", "Tanh") for lp in p.layers)
    cols = [Col("layer", keep=100, shorten="start", min_width=10), Col("type", keep=50, shorten="end", min_width=6),
            Col("zero out", keep=60), Col("dead units", keep=90)]
    if sat:
        cols.append(Col("saturated", keep=80))
    cols += [Col("weight grad (log)", keep=85), Col("upd/w", keep=95)]
    rows = []
    for lp in p.layers[:limit]:
        w = weight.get(lp.path)
        upd = _last(w.update_ratio) if w else None
        row = [plain(lp.path), plain(lp.type), _bar(_last(lp.zero_frac), "yellow"), _bar(_last(lp.dead_frac), "red")]
        if sat:
            row.append(_bar(_last(lp.saturated_frac), "magenta") if lp.type in ("Sigmoid", "Tanh") else Text(""))
        row += [_log_bar(_last(w.grad_norm)) if w else Text(""), Text("" if upd is None else f"{upd:.1e}")]
        rows.append(row)
    t = fit_table(cols, rows, width, title="layers (last recorded step)", header_style="bold", title_justify="left",
                  pad_edge=False)
    if len(p.layers) > limit:
        t.caption = f"{len(p.layers) - limit} more layers in --format json / html"
    return t


def render_probe_rich(reports: list[Report], console: Console) -> None:
    for r in reports:
        p = r.probe
        parts: list = [_summary(r, p)] if p is not None else []
        for extra in (findings_table(r, "diagnoses"), layer_table(p, width=console.width) if p is not None else None, diagnostics(r)):
            if extra is not None:
                parts.append(extra)
        if not r.findings:
            parts.insert(1, Text("no findings: nothing in the training dynamics looks wrong", style="green"))
        console.print(Group(*parts))
