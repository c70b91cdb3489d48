"""Terminal output of `dldoctor profile`: summary, latency per batch size, breakdown, what-ifs, findings."""
from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dldoctor.report.profile_types import ProfileResult
from dldoctor.report.units import nbytes, si
from dldoctor.render.rich.fit import Col, fit_table
from dldoctor.render.rich.report import diagnostics, findings_table
from dldoctor.render.text import markup, plain, safe
from dldoctor.report.types import Report


def _ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1e3:.3g}"


def _summary(r: Report, p: ProfileResult) -> Panel:
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold")
    g.add_column()
    c = p.config
    g.add_row("model", f"{markup(r.model.path)}  [dim]({markup(r.model.format)})[/]")
    g.add_row("device", f"{markup(p.device_name or c.get('device'))}  [dim]{markup(c.get('dtype', ''))}, threads "
                        f"{markup(c.get('threads'))}, warmup {markup(c.get('warmup'))}, iters {markup(c.get('iters'))}[/]")
    if p.best_batch_size is not None:
        g.add_row("best batch", f"{p.best_batch_size} (throughput within 5% of the best measured)")
    if p.achieved_flops_per_s is not None:
        peak = f" of {si(p.peak_flops_per_s)}FLOP/s peak ({p.achieved_flops_per_s / p.peak_flops_per_s:.1%})" \
            if p.peak_flops_per_s else ""
        g.add_row("achieved", f"{si(p.achieved_flops_per_s)}FLOP/s{peak}")
    if p.overhead is not None:
        g.add_row("profiler", f"a profiled run costs {p.overhead:.2f}× a plain one (breakdown only)")
    if p.error:
        g.add_row("error", plain(p.error, style="red"))
    for n in p.notes:
        g.add_row("note", plain(n, style="yellow"))
    return Panel(g, title="dldoctor profile", title_align="left")


def latency_table(p: ProfileResult) -> Table | None:
    if not p.latency:
        return None
    busy = p.load is not None and p.load.busy
    title = "latency per forward (ms)" + (" — measured on a busy machine: inflated, see the note" if busy else "")
    t = Table(title=title, header_style="bold", title_justify="left")
    for col in ("batch", "p50", "p90", "p99", "mean ± std", "cv", "samples/s", "peak mem"):
        t.add_column(col, justify="right", no_wrap=True)
    for s in p.latency:
        if s.error:
            t.add_row(str(s.batch_size), plain(s.error, style="red"), "", "", "", "", "", "")
            continue
        cv = Text("n/a" if s.cv is None else f"{s.cv:.0%}", style="red" if s.noisy else "")
        t.add_row(str(s.batch_size), _ms(s.p50), _ms(s.p90), _ms(s.p99),
                  f"{_ms(s.mean)} ± {_ms(s.std)}", cv, "n/a" if s.throughput is None else f"{s.throughput:.4g}",
                  "n/a" if s.peak_memory is None else nbytes(s.peak_memory))
    return t


def breakdown_table(p: ProfileResult, which: str, top: int = 10, width: int | None = None) -> Table | None:
    rows = (p.ops if which == "ops" else p.modules)[:top]
    if not rows:
        return None
    title = "top operators (self time)" if which == "ops" else "top modules / nodes"
    cols = [Col("name", keep=100, shorten="start", min_width=12), Col("share", keep=90, justify="right"),
            Col("ms/run", keep=95, justify="right"), Col("calls", keep=50, justify="right"),
            Col("FLOP/s", keep=60, justify="right"), Col("bound", keep=40)]
    cells = []
    for o in rows:
        bar = "█" * round(o.share * 10)
        name = plain(o.name)
        if o.provider:
            name.append(f" ({safe(o.provider)})", style="dim")
        cells.append([name, f"{bar} {o.share:.0%}", f"{o.time * 1e3:.3g}", str(o.calls or ""),
                      "" if o.flops_per_s is None else si(o.flops_per_s), plain(o.bound or "")])
    return fit_table(cols, cells, width, title=title, header_style="bold", title_justify="left")


def whatif_table(p: ProfileResult, width: int | None = None) -> Group | None:
    """One row per what-if (name, p50, speedup and its interval, verdict), then a line each saying what was
    changed and why it was or was not recommended: prose under the table, not squeezed into a column."""
    if not p.whatifs:
        return None
    cols = [Col("change", keep=100), Col("p50 ms", keep=80, justify="right"), Col("speedup", keep=95, justify="right"),
            Col("95% CI", keep=90, justify="right"), Col("rel. diff", keep=50, justify="right"),
            Col("verdict", keep=85, shorten="end", min_width=9)]
    cells, notes = [], Text()
    for w in p.whatifs:
        if not w.applicable:
            cells.append([plain(w.name), "", "", "", "", plain("not applicable", style="dim")])
            notes.append_text(plain(f"{w.name}: not applicable: {w.reason}", style="dim"))
            notes.append("\n")
            continue
        tm = w.timing
        sp = Text("n/a" if w.speedup is None else f"{w.speedup:.2f}×",
                  style="dim" if tm is not None and tm.verdict != "faster" else "")  # not a number to act on
        ci = "" if tm is None or tm.ci_low is None else f"{tm.ci_low:.2f}–{tm.ci_high:.2f}×"
        word = "recommended" if w.recommended else (tm.verdict if tm is not None else "tried")
        cells.append([plain(w.name), _ms(w.p50), sp, ci, "n/a" if w.rel_diff is None else f"{w.rel_diff:.1e}",
                      plain(word, style="green" if w.recommended else "dim")])
        line = plain(f"{w.name}: ", style="bold")
        if w.detail:
            line.append_text(plain(w.detail, style="dim"))
        if tm is not None and tm.rounds:
            line.append(f" ({tm.rounds} rounds)", style="dim")
        if not w.recommended and w.reason:
            line.append_text(plain(f"; {w.reason}", style="dim"))
        notes.append_text(line)
        notes.append("\n")
    notes.rstrip()
    t = fit_table(cols, cells, width, title="measured what-ifs (against the same model, same run)",
                  header_style="bold", title_justify="left")
    return Group(t, notes)


def render_profile_rich(reports: list[Report], console: Console) -> None:
    for r in reports:
        p = r.profile
        parts: list = []
        if p is not None:
            parts.append(_summary(r, p))
            parts += [x for x in (latency_table(p), breakdown_table(p, "ops", width=console.width),
                                  breakdown_table(p, "modules", width=console.width),
                                  whatif_table(p, console.width)) if x is not None]
        for extra in (findings_table(r, "findings"), diagnostics(r)):
            if extra is not None:
                parts.append(extra)
        console.print(Group(*parts))
