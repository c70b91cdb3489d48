"""Inspect an ONNX graph: inputs, parameters, MACs, activation memory, receptive field.

Everything is read from the graph itself (onnx + numpy, no torch, nothing is run):

* symbolic input dims are pinned to concrete values (batch -> 1 unless the caller
  gives shapes), shapes are inferred on a *copy* of the model with
  ``onnx.shape_inference.infer_shapes(..., data_prop=True)`` (``shapes``), with small
  shape arithmetic folded by numpy and fed back (``fold``);
* MACs come from per-op formulas (``macs``); an op with no formula, or a MAC op whose
  shapes are unknown, is listed in ``uncounted_ops`` and the count is partial;
* parameters are the initializers used as weights (``params``);
* inference activation memory is a liveness walk over the topologically sorted
  nodes (``memory``);
* the receptive field is propagated as (size r, jump j, effective padding p) per
  spatial dim through convolutions and pools (``receptive``).

The caller's ``ModelProto`` is never modified.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np
import onnx

from dldoctor.collect.onnx.common import (
    _KNOWN_DOMAINS,
    _MS,
    _STANDARD_DOMAINS,
    _declared_dims,
    _dom,
    _dtype_name,
    _known,
    _node_label,
    _subgraph_refs,
    _vi_shape,
)
from dldoctor.collect.onnx.fold import _MAX_ROUNDS, _ROUNDS_BUDGET_S, _bad_reshapes, _fold_values, _with_folds
from dldoctor.collect.onnx.macs import _node_macs
from dldoctor.collect.onnx.memory import _memory
from dldoctor.collect.onnx.params import _aliases, _collect_params
from dldoctor.collect.onnx.receptive import _RFWalk
from dldoctor.collect.onnx.shapes import (
    DEFAULT_BATCH,
    DEFAULT_SEQUENCE,
    DEFAULT_SPATIAL,
    _analysis_copy,
    _contrib_shapes,
    _fmt_dims,
    _infer,
    _resolve_inputs,
    _topo_sort,
    _View,
)
from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE, FlopStats, InputInfo, LayerInfo, Report

__all__ = ["inspect_onnx", "DEFAULT_BATCH", "DEFAULT_SPATIAL", "DEFAULT_SEQUENCE"]


def inspect_onnx(model: onnx.ModelProto, report: Report, input_shapes: list[list[int]] | None = None) -> None:
    """Fill ``report`` (inputs, params, flops, memory, receptive_field, layers, onnx) from an ONNX graph.

    ``input_shapes`` override the graph inputs that are not initializers, in order; symbolic dims that are
    not given are pinned (batch -> 1) and the input is marked ``assumed``.  ``model`` is not modified.
    """
    g = model.graph
    init_names = {t.name for t in g.initializer} | {sp.values.name for sp in g.sparse_initializer}
    real_vis = [vi for vi in g.input if vi.name not in init_names]
    resolved = _resolve_inputs(real_vis, input_shapes)
    report.inputs = [InputInfo(shape=list(r.shape), dtype=_dtype_name(r.elem), assumed=r.assumed) for r in resolved]
    for r in resolved:
        if r.notes:
            non_batch = any("(batch)" not in nt for nt in r.notes)
            report.diag("warning" if non_batch else "info",
                        f"input {r.name!r} {_fmt_dims(r.declared)}: assumed " + ", ".join(r.notes)
                        + f" -> {r.shape}; give --input-shape to change", where=r.name)

    # shapes, on a copy ----------------------------------------------------------------
    fixed = {r.name: r.shape for r in resolved if r.declared is not None or r.shape}
    base = _analysis_copy(model, fixed, report)
    nodes = list(base.graph.node)
    order = _topo_sort(nodes, report)
    if [i for i, _ in order] != list(range(len(nodes))):  # shape inference reads nodes in file order
        ordered = []
        for _, n in order:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            ordered.append(c)
        del base.graph.node[:]
        base.graph.node.extend(ordered)
        nodes = list(base.graph.node)
        order = list(enumerate(nodes))
    inferred, ok = _infer(base, report)
    values: dict[str, np.ndarray] = {}
    extra: dict[str, tuple[int, list[int]]] = {}
    view = _View(model, inferred, nodes)
    started = time.monotonic()
    for rnd in range(_MAX_ROUNDS):  # fold shape arithmetic and fill contrib-op shapes until nothing changes
        if time.monotonic() - started > _ROUNDS_BUDGET_S:
            report.diag("warning", f"shape inference stopped after {rnd} rounds ({_ROUNDS_BUDGET_S:.0f} s); "
                        "some shapes may be unknown")
            break
        changed = False
        for _, n in order:
            if _dom(n) == _MS and n.output and n.output[0] and not _known(view.shape(n.output[0])):
                for name, elem, shp in _contrib_shapes(n, view):
                    if name not in extra:
                        extra[name] = (elem, shp)
                        changed = True
        new = _fold_values([n for _, n in order], view, values)
        if new:
            values.update(new)
            changed = True
        if not changed or not ok:
            break
        again, ok = _infer(_with_folds(base, values, extra), report)
        if ok:
            inferred = again
        view = _View(model, inferred, nodes, values, extra)

    # the onnx section ------------------------------------------------------------------
    hist = Counter(n.op_type for n in nodes)
    used_domains = {_dom(n) for n in nodes}
    declared = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    custom = sorted((used_domains | set(declared)) - _STANDARD_DOMAINS)
    unknown_domains = sorted(d for d in used_domains if d not in _KNOWN_DOMAINS)
    graph_outputs = [o.name for o in g.output]
    report.onnx = {
        "opset": {(d or "ai.onnx"): v for d, v in sorted(declared.items())},
        "ir_version": int(model.ir_version),
        "producer": " ".join(x for x in (model.producer_name, model.producer_version) if x) or None,
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": [
            {"name": r.name, "shape": r.declared, "dtype": _dtype_name(r.elem), "used_shape": list(r.shape)}
            for r in resolved
        ],
        "outputs": [
            {"name": o.name, "shape": _declared_dims(o), "dtype": _dtype_name(_vi_shape(o)[0]),
             "inferred_shape": view.shape(o.name)}
            for o in g.output
        ],
        "custom_domains": custom,
        "num_nodes": len(nodes),
        "num_initializers": len(g.initializer),
    }
    if model.functions:
        report.onnx["functions"] = sorted({f"{f.domain}::{f.name}" if f.domain else f.name for f in model.functions})
    for d in unknown_domains:
        ops = Counter(n.op_type for n in nodes if _dom(n) == d)
        report.diag("warning", f"custom domain {d!r} is unknown to dldoctor (ops: "
                    + ", ".join(f"{k}×{v}" for k, v in sorted(ops.items()))
                    + "); their MACs and output shapes are not known, so the report is partial")

    # parameters ----------------------------------------------------------------------------
    alias = _aliases(model, nodes)
    param_names, param_elems = _collect_params(model, nodes, alias, report)

    # MACs and layers ------------------------------------------------------------------------
    uncounted: Counter[str] = Counter()
    why_uncounted: dict[str, str] = {}
    ignored: dict[str, Counter[str]] = defaultdict(Counter)
    layers: list[LayerInfo] = []
    layers_by_node: dict[int, LayerInfo] = {}
    total = 0
    # tensors computed from weights alone (DequantizeLinear, Cast, Transpose, Identity of an initializer):
    # their parameters are shown on the layer that consumes them
    const_like = {t.name for t in g.initializer} | set(view.const_nodes)
    derived: dict[str, frozenset[str]] = {}
    weight_only: set[int] = set()
    for idx, n in order:
        xs = [x for x in n.input if x]
        if xs and not _subgraph_refs(n) and all(x in const_like or x in derived for x in xs):
            src = frozenset().union(*({x} if x in param_names else derived.get(x, frozenset()) for x in xs))
            for o in n.output:
                if o:
                    derived[o] = src
            weight_only.add(idx)
    for idx, n in order:
        ins = [view.shape(x) if x else None for x in n.input]
        outs = [view.shape(x) if x else None for x in n.output]
        macs, left_out, why = _node_macs(n, ins, outs, view)
        if left_out:
            ignored[left_out][n.op_type] += 1
        if why:
            uncounted[n.op_type] += 1
            why_uncounted.setdefault(n.op_type, why)
        total += macs
        pcount = 0
        if idx not in weight_only or macs:
            used: set[str] = set()
            for x in n.input:
                used |= {x} if x in param_names else derived.get(x, frozenset())
            pcount = sum(param_elems[x] for x in used)
        if macs or pcount:
            shapes = [[-1 if d is None else d for d in s] for s in outs if s is not None]
            lay = LayerInfo(path=_node_label(n, idx), type=n.op_type, output_shape=shapes or None,
                            params=pcount, macs=macs, depth=1)
            layers.append(lay)
            layers_by_node[idx] = lay
    for lay in layers:
        lay.share = lay.macs / total if total else 0.0
    report.layers = layers

    reason = ["no training FLOPs: an ONNX graph has no backward pass"]
    bad = _bad_reshapes([n for _, n in order], view)
    if bad:
        report.diag("warning", f"the graph cannot run at input shape(s) {[i.shape for i in report.inputs]}: "
                    + "; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
                    + "; a size was probably fixed at export time; counts follow the graph as written")
        reason.append("the graph cannot run at these input shapes (see diagnostics)")
    if uncounted:
        reason.append("not counted: " + ", ".join(f"{k}×{v} ({why_uncounted[k]})" for k, v in sorted(uncounted.items())))
        for k, v in sorted(uncounted.items()):
            report.diag("warning", f"{k} ×{v} not counted in MACs: {why_uncounted[k]}")
    if ignored:
        report.diag("info", "MACs count Conv/ConvTranspose/Gemm/MatMul (and integer/QLinear variants), attention, "
                    "Einsum and RNNs; not multiply-accumulates, left out (torchvision _ops convention): " + "; ".join(
            f"{why}: " + ", ".join(f"{k}×{v}" for k, v in sorted(c.items())) for why, c in ignored.items()))
    report.flops = FlopStats(
        status=PARTIAL if (uncounted or bad) else COMPLETE, macs=total, flops=2 * total, training_flops=None,
        training_status=UNAVAILABLE,
        uncounted_ops=dict(sorted(uncounted.items())), reason="; ".join(reason),
    )

    # memory -----------------------------------------------------------------------------------
    report.memory = _memory(view, order, [r.name for r in resolved], graph_outputs, report)

    # receptive field ----------------------------------------------------------------------------
    walk = _RFWalk(view, report)
    for r in resolved:
        if r.shape:
            walk.seed(r.name, r.elem, r.shape)
    for idx, n in order:
        walk.step(idx, n)
    report.receptive_field = walk.finish(graph_outputs, layers_by_node)
