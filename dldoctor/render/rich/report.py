"""Terminal output: a summary panel, the layer table and diagnostics."""
from __future__ import annotations

import re

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dldoctor.render.rich.fit import Col, fit_table
from dldoctor.report.units import nbytes, shape, si
from dldoctor.render.skipped import is_skipped
from dldoctor.render.text import markup, plain, safe
from dldoctor.report.types import COMPLETE, ReceptiveField, Report

_STATUS_STYLE = {"complete": "green", "partial": "yellow", "unavailable": "red"}


def _status(s: str) -> str:
    return f"[{_STATUS_STYLE.get(s, 'white')}]{s}[/]"


def _rf_text(rf: ReceptiveField | None) -> str:
    if rf is None:
        return "-"
    if rf.global_ and not rf.size:
        return "global"
    if not rf.size:
        return "-"
    size = "×".join(f"{v:g}" for v in rf.size)
    out = size
    if rf.stride:
        out += f" /{'×'.join(f'{v:g}' for v in rf.stride)}" if len(set(rf.stride)) > 1 else f" /{rf.stride[0]:g}"
    if rf.global_:
        out = f"global (last map {out})"
    return out


_GLUE = re.compile(r"(?<=\d) (?=(?:[KMGTPE]i?)?B\b|[KMGTPE]\b|[KMGTPE]?(?:MACs|FLOPs)\b|px\b)")


def _prewrap(cell: str | Text, width: int) -> Text:
    """`cell` (markup or Text) wrapped at spaces to `width`, never between a number and its unit (`8.19 K`,
    `64.00 KiB`, `6.29 MMACs`): Rich would break there, and no space character it honours as unbreakable exists."""
    text = Text.from_markup(cell) if isinstance(cell, str) else cell.copy()
    out = Text()
    for n, para in enumerate(text.split("\n")):
        plain_ = para.plain
        glued = {m.start() for m in _GLUE.finditer(plain_)}
        cuts = [i for i, ch in enumerate(plain_) if ch == " " and i not in glued]  # where a line may break
        start, line_end, pieces = 0, 0, []
        bounds = [*cuts, len(plain_)]
        for b in bounds:
            if b - start > width and line_end > start:
                pieces.append((start, line_end))
                start = line_end + 1
            line_end = b
        pieces.append((start, len(plain_)))
        if n:
            out.append("\n")
        out.append(Text("\n").join(para[a:b] for a, b in pieces))
    return out


def glue_units(grid: Table, width: int | None) -> Table:
    """The grid's value cells pre-wrapped to what a `width`-column console leaves them (see `_prewrap`). Rich has no
    public access to a column's cells: with a Rich that stores them elsewhere, the grid is left as Rich wraps it."""
    labels, values = (getattr(c, "_cells", None) for c in grid.columns[:2]) if len(grid.columns) >= 2 else (None, None)
    if width is None or not isinstance(labels, list) or not isinstance(values, list):
        return grid
    label = max((len(c) if isinstance(c, str) else len(getattr(c, "plain", "")) for c in labels), default=0)
    room = max(20, width - 4 - label - 2)  # panel border and padding, the label, the gap between the columns
    grid.columns[1]._cells = [_prewrap(c, room) if isinstance(c, (str, Text)) else c for c in values]  # noqa: SLF001
    grid.columns[1].no_wrap = True
    return grid


def summary(r: Report, width: int | None = None) -> Panel:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{markup(r.model.path)}  [dim]({markup(r.model.format)})[/]")
    if r.inputs:
        ins = "; ".join((f"{markup(i.name)} " if getattr(i, "name", None) else "") + f"{'×'.join(map(str, i.shape))} "
                        f"{markup(i.dtype)}" + (" [dim](assumed)[/]" if i.assumed else "") for i in r.inputs)
        t.add_row("input", ins)
    p = r.params
    ptxt = f"{p.total:,} ({si(p.total)})  trainable {p.trainable:,}  frozen {p.frozen:,}  buffers {p.buffers:,}"
    if p.shared:
        ptxt += f"  [dim]shared (counted once) {p.shared:,}[/]"
    t.add_row("parameters", ptxt)
    t.add_row("weights", f"{nbytes(p.bytes + p.buffer_bytes)}  " + "  ".join(f"{markup(k)} {v:,}" for k, v in p.by_dtype.items()))
    f = r.flops
    if f.macs is not None:
        ftxt = f"{si(f.macs, 'MACs')}  {si(f.flops, 'FLOPs')}  {_status(f.status)}"
        if f.training_flops is not None:
            ftxt += f"\ntraining step {si(f.training_flops, 'FLOPs')} (forward + backward)  {_status(f.training_status)}"
    else:
        ftxt = _status(f.status)
    if f.reason:
        ftxt += f"\n[dim]{markup(f.reason)}[/]"
    t.add_row("compute", ftxt)
    m = r.memory
    mtxt = f"inference peak {nbytes(m.inference_peak_bytes)}"
    if m.training_peak_bytes is not None:
        mtxt += f"  training step ({m.optimizer}) {nbytes(m.training_peak_bytes)}"
    if m.batch_size:
        mtxt += f"  [dim]at batch {m.batch_size}[/]"
    for row in m.per_batch:
        mtxt += f"\nbatch {row['batch_size']}: inference {nbytes(row['inference_peak_bytes'])}"
        if row.get("training_peak_bytes") is not None:
            mtxt += f", training step {nbytes(row['training_peak_bytes'])}"
    if m.reason:
        mtxt += f"\n[dim]{markup(m.reason)}[/]"
    t.add_row("memory", mtxt)
    rf = r.receptive_field
    rtxt = _rf_text(rf) if rf.status != "unavailable" else _status(rf.status)
    if rf.status not in (COMPLETE, "unavailable"):
        rtxt += f"  {_status(rf.status)}"
    if rf.reason:
        rtxt += f"\n[dim]{markup(rf.reason)}[/]"
    t.add_row("receptive field", rtxt)
    if r.onnx:
        t.add_row("onnx", plain(f"opset {r.onnx.get('opset')}  ops " + ", ".join(f"{k}×{v}" for k, v in list(r.onnx.get("op_histogram", {}).items())[:8])))
    return Panel(glue_units(t, width), title=plain(f"dldoctor · {r.model.name or r.model.path}"), expand=False)


def plan_panel(r: Report, width: int | None = None) -> Panel | None:
    """The memory plan of a decoder: parameters, FLOPs per token, KV cache, inference, training, per GPU."""
    p = r.llm_plan
    if p is None:
        return None
    a = p.architecture
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("decoder", f"{a.get('n_layers')} layers, hidden {a.get('hidden')}, heads {a.get('n_heads')}/"
                         f"{a.get('n_kv_heads')} kv × {a.get('head_dim')}, vocab {a.get('vocab'):,}"
                         + (" [dim](tied)[/]" if a.get("tied_embeddings") else ""))
    t.add_row("parameters", f"{si(p.params_total)} (non-embedding {si(p.params_non_embedding)}, "
                            f"embedding {si(p.params_embedding)})")
    t.add_row("FLOPs/token", f"{si(p.flops_per_token_prefill)} prefill at T={p.context:,}; "
                             f"{si(p.flops_per_token_decode)} decode at {p.context:,}")
    t.add_row("KV cache", f"{nbytes(p.kv_cache_bytes_per_token)}/token {markup(p.kv_dtype)}; "
                          f"{nbytes(p.kv_cache_bytes)} at {p.context:,} × batch {p.batch_size}")
    i = p.inference
    t.add_row("inference", f"{nbytes(i.get('total'))}: weights {nbytes(i.get('weights'))}, KV {nbytes(i.get('kv_cache'))}, "
                           f"act. {nbytes(i.get('activations'))}")

    def tr(x: dict) -> str:
        return f"{nbytes(x.get('total'))} (checkpointed {nbytes(x.get('total_checkpointed'))})"

    full, lora = p.training.get("full", {}), p.training.get("lora", {})
    t.add_row("full tuning", f"{tr(full)}, AdamW, 16 B/param")
    t.add_row(f"LoRA r={p.lora_rank}", f"{tr(lora)}, {si(p.lora_trainable_params)} trainable (q k v o)")
    g = p.per_gpu
    t.add_row(f"{markup(p.strategy)} ×{p.gpus}", f"{tr(g)} per GPU: weights {nbytes(g.get('params'))}, grads "
                                              f"{nbytes(g.get('gradients'))}, optimizer {nbytes(g.get('optimizer'))}, "
                                              f"activations {nbytes(g.get('activations'))}")
    return Panel(glue_units(t, width), title="memory plan", expand=False)


def layer_table(r: Report, depth: int | None, width: int | None = None) -> Table | None:
    """One row per layer down to `depth`, fitted to `width` without splitting a path, shape or number."""
    rows = [lay for lay in r.layers if depth is None or lay.depth <= depth]
    if not rows:
        return None
    cols = [Col("layer", keep=100, shorten="start", min_width=12), Col("type", keep=70, shorten="end", min_width=8),
            Col("output", keep=80), Col("params", keep=90, justify="right"), Col("MACs", keep=95, justify="right"),
            Col("share", keep=40, justify="right"), Col("receptive field", keep=30, shorten="end", min_width=9)]
    cells = [[plain("  " * (lay.depth - 1) + lay.path), plain(lay.type), plain(shape(lay.output_shape)),
              f"{lay.params:,}", si(lay.macs), f"{100 * lay.share:.1f}%", plain(_rf_text(lay.receptive_field))]
             for lay in rows]
    return fit_table(cols, cells, width, title="layers", show_lines=False, header_style="bold")


def tensor_table(r: Report, limit: int = 30, width: int | None = None) -> Table | None:
    if not r.tensors:
        return None
    # a tensor's name is shown whole (folded when longer than the room): it may be all a weights-only report has
    cols = [Col("name", keep=100, shorten="fold", min_width=12), Col("shape", keep=90), Col("dtype", keep=60),
            Col("bytes", keep=80, justify="right")]
    cells = [[plain(x.name), "×".join(map(str, x.shape)) or "scalar", plain(x.dtype), nbytes(x.nbytes)]
             for x in r.tensors[:limit]]
    if len(r.tensors) > limit:
        cells.append([f"... {len(r.tensors) - limit} more", "", "", ""])
    return fit_table(cols, cells, width, title=f"tensors ({len(r.tensors)})", header_style="bold")


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def diagnostics(r: Report) -> Text | None:
    """The report's warnings and notes, one line each. Not the skipped rules (the commands count those in one line
    on stderr and list them with --show-skipped, render/skipped.py), nor the errors: every command prints each
    error once, as its `dldoctor: error:` line on stderr, and the exit code says it."""
    shown = [d for d in r.diagnostics if not is_skipped(d) and d.level != "error"]
    if not shown:
        return None
    lines = Text()
    for d in shown:
        lines.append(f"{d.level}: ", style=SEVERITY_STYLE.get(d.level, "white"))
        lines.append(safe(d.message) + "\n", style="dim" if d.where == "rules" else "")
    return lines


def findings_table(r: Report, title: str | None = "findings") -> Text | None:
    """Rule findings, one per line as `check` prints them (`LOCATION: CODE [severity] message`), the fix on an
    indented line: prose wraps between words, a name or a number is never split (no table columns to squeeze)."""
    if not r.findings:
        return None
    out = Text()
    if title:
        out.append(f"{title}\n", style="bold")
    for f in r.findings:
        style = SEVERITY_STYLE.get(f.severity, "white")
        if f.location:
            out.append_text(plain(f.location, style="cyan"))
            out.append(": ", style="dim")
        out.append_text(plain(f.code, style=style))
        out.append(f" [{safe(f.severity)}] ", style=style)
        out.append_text(plain(f.message))
        out.append("\n")
        if f.fix or f.transform:
            out.append("  = fix: ", style="dim")
            out.append_text(plain(f.fix or "-"))
            if f.transform:
                out.append(f" (dldoctor compress -t {safe(f.transform)})", style="dim")
            out.append("\n")
    out.rstrip()
    return out


def render_rich(reports: list[Report], console: Console, depth: int | None = 3) -> None:
    for r in reports:
        parts = [summary(r, console.width)]
        for extra in (plan_panel(r, console.width), layer_table(r, depth, console.width), tensor_table(r, width=console.width),
                      findings_table(r), diagnostics(r)):
            if extra is not None:
                parts.append(extra)
        console.print(Group(*parts))
