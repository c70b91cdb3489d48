"""Parameters of an ONNX graph: which initializers are weights, which are buffers."""
from __future__ import annotations

from collections import Counter, defaultdict

import onnx

from dldoctor.collect.onnx.common import (
    _FLOAT_TYPES,
    _QUANT_INT_TYPES,
    _attrs,
    _dom,
    _dtype_name,
    _nbytes,
    _prod,
    _subgraph_refs,
)
from dldoctor.report.types import ParamStats, Report


# initializer roles: input slots that hold quantization metadata, running stats or small constants
_QUANT_META: dict[str, set[int]] = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {2, 3},
    "MatMulInteger": {2, 3},
    "DynamicQuantizeMatMul": {2, 3},
    "MatMulIntegerToFloat": {2, 3, 4, 5},
    "QGemm": {1, 2, 4, 5, 7, 8},
    "QLinearAdd": {1, 2, 4, 5, 6, 7},
    "QLinearMul": {1, 2, 4, 5, 6, 7},
    "MatMulNBits": {2, 3, 4},
}
_STATS: dict[str, set[int]] = {"BatchNormalization": {3, 4}}
_CONST_SLOTS: dict[str, set[int]] = {
    "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1},
    "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "Clip": {1, 2},
    "Range": {0, 1, 2}, "TopK": {1}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1},
    "ReduceMin": {1}, "ReduceProd": {1}, "ReduceL1": {1}, "ReduceL2": {1}, "ReduceLogSum": {1},
    "ReduceLogSumExp": {1}, "ReduceSumSquare": {1}, "Pow": {1}, "ConstantOfShape": {0}, "OneHot": {1, 2},
}
# int32 biases of quantized graphs are weights too
_PARAM_SLOTS: dict[str, set[int]] = {"QLinearConv": {8}, "QGemm": {6}, "DequantizeLinear": {0}}


def _aliases(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict[str, str]:
    """Identity outputs that are just another name for an initializer -> the initializer."""
    inits = {t.name for t in model.graph.initializer}
    alias: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.op_type == "Identity" and _dom(n) == "" and n.input and n.output and n.output[0] not in alias:
                src = alias.get(n.input[0], n.input[0])
                if src in inits:
                    alias[n.output[0]] = src
                    changed = True
    return alias


def _collect_params(model: onnx.ModelProto, nodes: list[onnx.NodeProto], alias: dict[str, str],
                    report: Report) -> tuple[set[str], dict[str, int]]:
    """Fill report.params; return (parameter initializer names, elements per initializer)."""
    roles: dict[str, set[str]] = defaultdict(set)
    users: Counter[str] = Counter()
    nbits_elems: dict[str, tuple[int, int]] = {}
    names: Counter[str] = Counter(alias.values())
    for n in nodes:
        op = n.op_type
        if op == "Identity" and n.output and n.output[0] in alias:
            continue
        seen: set[str] = set()
        for i, x in enumerate(n.input):
            x = alias.get(x, x)
            if not x:
                continue
            if x not in seen:
                users[x] += 1
                seen.add(x)
            if i in _PARAM_SLOTS.get(op, ()):
                roles[x].add("param")
            elif i in _QUANT_META.get(op, ()):
                roles[x].add("quant")
            elif i in _STATS.get(op, ()):
                roles[x].add("stat")
            elif i in _CONST_SLOTS.get(op, ()):
                roles[x].add("const")
            else:
                roles[x].add("data")
            if op == "MatMulNBits" and i == 1:
                a = _attrs(n)
                if "N" in a and "K" in a:
                    nbits_elems[x] = (int(a["N"]) * int(a["K"]), int(a.get("bits", 4)))
        for x in _subgraph_refs(n):
            x = alias.get(x, x)
            users[x] += 1
            roles[x].add("data")

    ps = ParamStats()
    params: set[str] = set()
    elems: dict[str, int] = {}
    reasons: Counter[str] = Counter()
    unused = 0
    for t in list(model.graph.initializer) + [sp.values for sp in model.graph.sparse_initializer]:
        dims = [int(d) for d in t.dims]
        numel = _prod(dims)
        nbytes = _nbytes(t.data_type, numel) or 0
        r = roles.get(t.name, set())
        if not r:
            unused += 1
        is_param = "param" in r or (
            (t.data_type in _FLOAT_TYPES or t.data_type in _QUANT_INT_TYPES) and (not r or "data" in r)
            and len(dims) > 0  # a 0-d float is a literal (a scale, an epsilon), not a weight
        )
        if is_param:
            dtype = _dtype_name(t.data_type)
            if t.name in nbits_elems:
                numel, bits = nbits_elems[t.name]
                dtype = f"int{bits}"
            params.add(t.name)
            elems[t.name] = numel
            ps.total += numel
            ps.bytes += nbytes
            ps.by_dtype[dtype] = ps.by_dtype.get(dtype, 0) + numel
            if users[t.name] > 1 or names[t.name]:
                ps.shared += numel
        else:
            ps.buffers += numel
            ps.buffer_bytes += nbytes
            if t.data_type in _FLOAT_TYPES or t.data_type in _QUANT_INT_TYPES:
                why = "quantization scales/zero points" if "quant" in r else (
                    "running statistics" if "stat" in r else (
                        "0-d literals" if not dims else "shape/constant operands"))
                reasons[why] += 1
    const_nodes = 0
    for n in nodes:
        if n.op_type == "Constant" and _dom(n) == "":
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    numel = _prod(a.t.dims)
                    ps.buffers += numel
                    ps.buffer_bytes += _nbytes(a.t.data_type, numel) or 0
                    const_nodes += 1
    ps.trainable, ps.frozen = ps.total, 0
    report.params = ps
    if reasons:
        report.diag("info", "float/int8 initializers counted as buffers, not parameters: "
                    + ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items())))
    if unused:
        report.diag("info", f"{unused} initializer(s) are not used by any node; counted all the same")
    aliased = sum(1 for t in model.graph.initializer if names[t.name])
    if aliased:
        report.diag("info", f"{aliased} initializer(s) appear under more than one name (Identity aliases; exporters "
                    "merge parameters with equal values, e.g. freshly initialised norms); each is counted once, "
                    "so the total can be lower than the source model's")
    if ps.shared:
        report.diag("info", f"{ps.shared:,} parameter elements are shared (used by more than one node or under "
                    "more than one name); counted once")
    if model.graph.sparse_initializer:
        report.diag("info", f"{len(model.graph.sparse_initializer)} sparse initializer(s): counted by stored values")
    return params, elems
