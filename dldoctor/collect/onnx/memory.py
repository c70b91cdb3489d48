"""Inference activation memory of an ONNX graph: a liveness walk over the topologically sorted nodes."""
from __future__ import annotations

import onnx

from dldoctor.collect.onnx.common import _dom, _known, _nbytes, _prod, _subgraph_refs
from dldoctor.collect.onnx.shapes import _View
from dldoctor.report.types import COMPLETE, PARTIAL, MemoryStats, Report


def _memory(view: _View, order: list[tuple[int, onnx.NodeProto]], real_inputs: list[str], graph_outputs: list[str],
            report: Report) -> MemoryStats:
    last_use: dict[str, int] = {}
    for pos, (_, n) in enumerate(order):
        for x in list(n.input) + sorted(_subgraph_refs(n)):
            if x:
                last_use[x] = pos
    keep = set(graph_outputs)
    unknown: set[str] = set()

    def size(name: str) -> int:
        s = view.shape(name)
        nb = _nbytes(view.elem(name), _prod(s)) if _known(s) else None
        if nb is None:
            unknown.add(name)
            return 0
        return nb

    live: dict[str, int] = {}
    for x in real_inputs:
        if x in last_use or x in keep:
            live[x] = size(x)
    cur = peak = sum(live.values())
    for pos, (_, n) in enumerate(order):
        if n.op_type == "Constant" and _dom(n) == "":
            continue  # constants are counted with the buffers
        for o in n.output:
            if o and o not in live:
                live[o] = size(o)
                cur += live[o]
        peak = max(peak, cur)
        for x in dict.fromkeys(list(n.input) + list(n.output) + sorted(_subgraph_refs(n))):
            if x in live and x not in keep and last_use.get(x, -1) <= pos:
                cur -= live.pop(x)
    weights = report.params.bytes + report.params.buffer_bytes
    ms = MemoryStats(
        status=PARTIAL if unknown else COMPLETE,
        params_bytes=report.params.bytes,
        buffers_bytes=report.params.buffer_bytes,
        inference_peak_bytes=weights + peak,
        training_peak_bytes=None,
        batch_size=report.inputs[0].shape[0] if report.inputs and report.inputs[0].shape else None,
    )
    why = ["inference only: an ONNX graph has no backward pass"]
    if unknown:
        why.append(f"{len(unknown)} tensor(s) of unknown size counted as 0")
    ms.reason = "; ".join(why)
    return ms
