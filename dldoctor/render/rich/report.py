"""Terminal output: a summary panel, the layer table and diagnostics."""
from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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


def summary(r: Report) -> Panel:
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
    return Panel(t, title=plain(f"dldoctor · {r.model.name or r.model.path}"), expand=False)


def plan_panel(r: Report) -> Panel | None:
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
    return Panel(t, title="memory plan", expand=False)


def layer_table(r: Report, depth: int | None) -> Table | None:
    rows = [lay for lay in r.layers if depth is None or lay.depth <= depth]
    if not rows:
        return None
    t = Table(title="layers", show_lines=False, header_style="bold")
    t.add_column("layer", overflow="fold", ratio=3)
    t.add_column("type", overflow="ellipsis", max_width=20)
    t.add_column("output", overflow="fold")
    t.add_column("params", justify="right")
    t.add_column("MACs", justify="right")
    t.add_column("share", justify="right")
    t.add_column("receptive field", overflow="fold")
    for lay in rows:
        t.add_row(
            plain("  " * (lay.depth - 1) + lay.path),
            plain(lay.type),
            plain(shape(lay.output_shape)),
            f"{lay.params:,}",
            si(lay.macs),
            f"{100 * lay.share:.1f}%",
            plain(_rf_text(lay.receptive_field)),
        )
    return t


def tensor_table(r: Report, limit: int = 30) -> Table | None:
    if not r.tensors:
        return None
    t = Table(title=f"tensors ({len(r.tensors)})", header_style="bold")
    t.add_column("name")
    t.add_column("shape")
    t.add_column("dtype")
    t.add_column("bytes", justify="right")
    for x in r.tensors[:limit]:
        t.add_row(plain(x.name), "×".join(map(str, x.shape)) or "scalar", plain(x.dtype), nbytes(x.nbytes))
    if len(r.tensors) > limit:
        t.add_row(f"... {len(r.tensors) - limit} more", "", "", "")
    return t


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


def findings_table(r: Report, title: str | None = "findings") -> Table | None:
    """Rule findings: severity in colour, code and name, location, message and the fix."""
    if not r.findings:
        return None
    t = Table(title=title, header_style="bold", show_lines=True, title_justify="left")
    t.add_column("severity", no_wrap=True)
    t.add_column("code", no_wrap=True)
    t.add_column("location", overflow="fold", max_width=32)
    t.add_column("message", overflow="fold", ratio=3)
    t.add_column("fix", overflow="fold", ratio=2)
    for f in r.findings:
        style = SEVERITY_STYLE.get(f.severity, "white")
        fix = plain(f.fix or "-")
        if f.transform:
            fix.append(f"\ntransform: {safe(f.transform)}", style="dim")
        t.add_row(plain(f.severity, style=style), plain(f.code, style=style).append("\n").append(safe(f.name)),
                  plain(f.location or "-"), plain(f.message), fix)
    return t


def render_rich(reports: list[Report], console: Console, depth: int | None = 3) -> None:
    for r in reports:
        parts = [summary(r)]
        for extra in (plan_panel(r), layer_table(r, depth), tensor_table(r), findings_table(r), diagnostics(r)):
            if extra is not None:
                parts.append(extra)
        console.print(Group(*parts))
