"""Terminal output of `dldoctor profile`: summary, latency per batch size, breakdown, what-ifs, findings."""
from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dldoctor.report.profile_types import ProfileResult
from dldoctor.report.units import nbytes, si
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


def breakdown_table(p: ProfileResult, which: str, top: int = 10) -> Table | None:
    rows = (p.ops if which == "ops" else p.modules)[:top]
    if not rows:
        return None
    title = "top operators (self time)" if which == "ops" else "top modules / nodes"
    t = Table(title=title, header_style="bold", title_justify="left")
    for col, j in (("name", "left"), ("share", "right"), ("ms/run", "right"), ("calls", "right"),
                   ("FLOP/s", "right"), ("bound", "left")):
        t.add_column(col, justify=j, overflow="fold")
    for o in rows:
        bar = "█" * round(o.share * 10)
        name = plain(o.name)
        if o.provider:
            name.append(f" ({safe(o.provider)})", style="dim")
        t.add_row(name, f"{bar} {o.share:.0%}",
                  f"{o.time * 1e3:.3g}", str(o.calls or ""), "" if o.flops_per_s is None else si(o.flops_per_s),
                  plain(o.bound or ""))
    return t


def whatif_table(p: ProfileResult) -> Table | None:
    if not p.whatifs:
        return None
    t = Table(title="measured what-ifs (against the same model, same run)", header_style="bold", title_justify="left")
    for col, j in (("change", "left"), ("p50 ms", "right"), ("speedup (95% CI)", "right"), ("rel. diff", "right"),
                   ("verdict", "left")):
        t.add_column(col, justify=j, overflow="fold")
    for w in p.whatifs:
        name = plain(w.name)
        if w.detail:
            name.append(f" {safe(w.detail)}", style="dim")
        if not w.applicable:
            t.add_row(name, "", "", "", plain(f"not applicable: {w.reason}", style="dim"))
            continue
        tm = w.timing
        sp = Text("n/a" if w.speedup is None else f"{w.speedup:.2f}×",
                  style="dim" if tm is not None and tm.verdict != "faster" else "")  # not a number to act on
        if tm is not None and tm.ci_low is not None:
            sp.append(f"\n{tm.ci_low:.2f}–{tm.ci_high:.2f}, {tm.rounds} rounds", style="dim")
        verdict = Text("recommended", style="green") if w.recommended else plain(f"tried: {w.reason or 'no gain'}",
                                                                                 style="dim")
        t.add_row(name, _ms(w.p50), sp, "n/a" if w.rel_diff is None else f"{w.rel_diff:.1e}", verdict)
    return t


def render_profile_rich(reports: list[Report], console: Console) -> None:
    for r in reports:
        p = r.profile
        parts: list = []
        if p is not None:
            parts.append(_summary(r, p))
            parts += [x for x in (latency_table(p), breakdown_table(p, "ops"), breakdown_table(p, "modules"),
                                  whatif_table(p)) if x is not None]
        for extra in (findings_table(r, "findings"), diagnostics(r)):
            if extra is not None:
                parts.append(extra)
        console.print(Group(*parts))
