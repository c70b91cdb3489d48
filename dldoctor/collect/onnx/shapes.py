"""Input shapes and shape inference for an ONNX graph.

Symbolic input dims are pinned to concrete values (batch -> 1 unless the caller gives
shapes), shapes are inferred on a *copy* of the model with
``onnx.shape_inference.infer_shapes(..., data_prop=True)``; output shapes of the
com.microsoft contrib ops ONNX does not know are filled in here.  ``_View`` holds the
shapes, small constants and producers of the analysed graph.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper, shape_inference

from dldoctor.collect.onnx.common import (
    _FLOAT_TYPES,
    _attrs,
    _declared_dims,
    _dom,
    _known,
    _prod,
    _subgraph_refs,
    _vi_shape,
)
from dldoctor.errors import InputSpecError
from dldoctor.report.types import Report


DEFAULT_BATCH = 1
DEFAULT_SPATIAL = 224
DEFAULT_SEQUENCE = 128


# -- input shapes ---------------------------------------------------------------
_BATCH_NAMES = re.compile(r"^(n|b|bs|batch|batch_?size|.*batch.*)$", re.I)
_SEQ_NAMES = re.compile(r"(seq|len|token|time|^t$|^s$|^l$|past|total)", re.I)
_SPATIAL_NAMES = re.compile(r"(height|width|^h$|^w$|^d$|depth)", re.I)


def _default_dim(name: str | None, k: int, rank: int, elem: int) -> tuple[int, str]:
    """A value for a symbolic dim: by its name when it tells, else by position (dim 0 is the batch)."""
    if name and _BATCH_NAMES.match(name):
        return DEFAULT_BATCH, "batch"
    if name and _SEQ_NAMES.search(name):
        return DEFAULT_SEQUENCE, "sequence"
    if name and _SPATIAL_NAMES.search(name):
        return DEFAULT_SPATIAL, "spatial"
    if k == 0:
        return DEFAULT_BATCH, "batch"
    if rank in (4, 5) and elem in _FLOAT_TYPES:
        if k == 1:
            return 3, "channels"
        return DEFAULT_SPATIAL, "spatial"
    return DEFAULT_SEQUENCE, "sequence"


@dataclass
class _Input:
    name: str
    elem: int
    declared: list[int | str | None] | None
    shape: list[int]
    assumed: bool
    notes: list[str] = field(default_factory=list)


def _resolve_inputs(real_inputs: list[onnx.ValueInfoProto], input_shapes: list[list[int]] | None) -> list[_Input]:
    given_all = [list(map(int, s)) for s in (input_shapes or [])]
    if len(given_all) > len(real_inputs):
        raise InputSpecError(
            f"{len(given_all)} input shapes given but the graph has {len(real_inputs)} input(s)",
            hint="pass one --input-shape per graph input, in graph order",
        )
    bindings: dict[str, int] = {}
    # shapes the caller gave fix the symbolic names they cover, for every input
    for vi, given in zip(real_inputs, given_all):
        dims = _declared_dims(vi)
        if any(g <= 0 for g in given):
            raise InputSpecError(f"input {vi.name!r}: shape {given} has a non-positive dim")
        if dims is None:
            continue
        if len(dims) != len(given):
            raise InputSpecError(
                f"input {vi.name!r} has rank {len(dims)} ({_fmt_dims(dims)}) but the shape given is {given}",
                hint="give every dim of the input, in order",
            )
        for d, g in zip(dims, given):
            if isinstance(d, int) and d != g:
                raise InputSpecError(
                    f"input {vi.name!r} is fixed at {_fmt_dims(dims)}; the shape given is {given}",
                    hint="only symbolic dims of an ONNX input can change",
                )
            if isinstance(d, str):
                bindings.setdefault(d, g)
    out: list[_Input] = []
    for i, vi in enumerate(real_inputs):
        elem, _ = _vi_shape(vi)
        dims = _declared_dims(vi)
        if i < len(given_all):
            out.append(_Input(vi.name, elem, dims, given_all[i], False))
            continue
        if dims is None:
            out.append(_Input(vi.name, elem, None, [], True, ["the input declares no shape"]))
            continue
        shape: list[int] = []
        notes: list[str] = []
        assumed = False
        for k, d in enumerate(dims):
            if isinstance(d, int):
                shape.append(d)
                continue
            if isinstance(d, str) and d in bindings:
                shape.append(bindings[d])
                continue
            v, kind = _default_dim(d, k, len(dims), elem)
            if isinstance(d, str):
                bindings[d] = v
            shape.append(v)
            assumed = True
            notes.append(f"{d if d else f'dim {k}'}={v} ({kind})")
        out.append(_Input(vi.name, elem, dims, shape, assumed, notes))
    return out


def _fmt_dims(dims: list[Any] | None) -> str:
    if dims is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


# -- the analysis copy ----------------------------------------------------------
_KEEP_ANY = 64  # initializers this small keep their values (shape inference may read them)
_KEEP_INT = 1 << 16


def _keep_values(init: TensorProto) -> bool:
    if init.data_location == TensorProto.EXTERNAL:
        return False
    n = _prod(init.dims)
    if n <= _KEEP_ANY:
        return True
    return init.data_type in (TensorProto.INT64, TensorProto.INT32) and n <= _KEEP_INT


def _analysis_copy(model: onnx.ModelProto, fixed: dict[str, list[int]], report: Report) -> onnx.ModelProto:
    """A light copy of the model for shape inference; big weights become typed graph inputs."""
    m = onnx.ModelProto()
    m.ir_version = model.ir_version or 8
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    g, src = m.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    for o in src.output:
        vi = g.output.add()
        vi.CopyFrom(o)
        if vi.type.HasField("tensor_type"):
            vi.ClearField("type")  # stale declared types and shapes only get in the way
    input_names = {i.name for i in g.input}
    for init in src.initializer:
        if _keep_values(init):
            g.initializer.append(init)
        elif init.name not in input_names:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
            input_names.add(init.name)
    for sp in src.sparse_initializer:
        if sp.values.name not in input_names:
            g.input.append(helper.make_tensor_value_info(sp.values.name, sp.values.data_type, list(sp.dims)))
            input_names.add(sp.values.name)
    if m.functions:
        try:
            m = onnx.inliner.inline_local_functions(m)
            report.diag("info", f"inlined {len(model.functions)} model-local function(s) before counting")
        except Exception as e:  # noqa: BLE001
            report.diag("warning", f"could not inline model-local functions: {e}")
    declared = {o.domain for o in m.opset_import}
    for dom in sorted({n.domain for n in m.graph.node} - declared - {"ai.onnx"}):
        m.opset_import.append(helper.make_opsetid(dom, 1))
        report.diag("warning", f"nodes use domain {dom!r} but the model imports no opset for it")
    for vi in m.graph.input:
        if vi.name in fixed and vi.type.HasField("tensor_type"):
            shp = vi.type.tensor_type.shape
            shp.ClearField("dim")
            for v in fixed[vi.name]:
                shp.dim.add().dim_value = v
    return m


def _infer(m: onnx.ModelProto, report: Report) -> tuple[onnx.ModelProto, bool]:
    last: Exception | None = None
    for data_prop in (True, False):
        try:
            return shape_inference.infer_shapes(m, check_type=False, strict_mode=False, data_prop=data_prop), True
        except Exception as e:  # noqa: BLE001
            last = e
    report.diag("warning", f"ONNX shape inference failed ({_short(last)}); only declared shapes are used")
    return m, False


def _short(e: Any) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:200]


# -- graph view -------------------------------------------------------------------
_NP_TO_ONNX: dict[Any, int] = {}
for _elem in (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13):
    _NP_TO_ONNX[np.dtype(helper.tensor_dtype_to_np_dtype(_elem))] = _elem


class _View:
    """Shapes, constants and producers of the analysed graph."""

    def __init__(self, model: onnx.ModelProto, inferred: onnx.ModelProto, nodes: list[onnx.NodeProto],
                 values: dict[str, np.ndarray] | None = None,
                 extra: dict[str, tuple[int, list[int]]] | None = None) -> None:
        self.shapes: dict[str, tuple[int, list[int | None] | None]] = {}
        g = inferred.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            elem, dims = _vi_shape(vi)
            if vi.name not in self.shapes or self.shapes[vi.name][1] is None:
                self.shapes[vi.name] = (elem, dims)
        for name, (elem, dims) in (extra or {}).items():
            if self.shape(name) is None or not _known(self.shape(name)):
                self.shapes[name] = (elem, list(dims))
        self.values = dict(values or {})
        for name, arr in self.values.items():
            self.shapes[name] = (_NP_TO_ONNX.get(arr.dtype, self.elem(name)), [int(d) for d in arr.shape])
        for t in inferred.graph.initializer:  # folded constants
            if t.name not in self.shapes:
                self.shapes[t.name] = (t.data_type, [int(d) for d in t.dims])
        self.inits: dict[str, TensorProto] = {t.name: t for t in model.graph.initializer}
        for name, t in self.inits.items():
            self.shapes[name] = (t.data_type, [int(d) for d in t.dims])
        self.const_nodes: dict[str, onnx.NodeProto] = {}
        for n in nodes:
            if n.op_type == "Constant" and _dom(n) == "" and n.output:
                self.const_nodes[n.output[0]] = n
        self._cache: dict[str, np.ndarray | None] = dict(self.values)

    def shape(self, name: str) -> list[int | None] | None:
        if not name or name not in self.shapes:
            return None
        return self.shapes[name][1]

    def elem(self, name: str) -> int:
        return self.shapes.get(name, (0, None))[0]

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self._cache:
            return self._cache[name]
        val: np.ndarray | None = None
        try:
            if name in self.inits:
                t = self.inits[name]
                if t.data_location != TensorProto.EXTERNAL and _prod(t.dims) <= _KEEP_INT:
                    val = numpy_helper.to_array(t)
            elif name in self.const_nodes:
                a = _attrs(self.const_nodes[name])
                for key in ("value", "value_ints", "value_floats", "value_int", "value_float"):
                    if key in a:
                        v = a[key]
                        val = numpy_helper.to_array(v) if isinstance(v, TensorProto) else np.asarray(v)
                        break
        except Exception:  # noqa: BLE001
            val = None
        self._cache[name] = val
        return val

    def ints(self, name: str) -> list[int] | None:
        v = self.const(name)
        if v is None:
            return None
        try:
            return [int(x) for x in np.asarray(v).reshape(-1)]
        except (TypeError, ValueError):
            return None


def _topo_sort(nodes: list[onnx.NodeProto], report: Report) -> list[tuple[int, onnx.NodeProto]]:
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer[o] = i
    deps: list[set[int]] = []
    for i, n in enumerate(nodes):
        d = {producer[x] for x in list(n.input) + sorted(_subgraph_refs(n)) if x in producer and producer[x] != i}
        deps.append(d)
    if all(all(j < i for j in d) for i, d in enumerate(deps)):
        return list(enumerate(nodes))
    users: dict[int, list[int]] = defaultdict(list)
    indeg = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready = deque(i for i, k in enumerate(indeg) if k == 0)
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        report.diag("warning", "the graph has a cycle or dangling references; nodes are taken in file order")
        return list(enumerate(nodes))
    report.diag("info", "nodes were not in topological order; they were sorted before the walk")
    return [(i, nodes[i]) for i in order]


# -- shape arithmetic ---------------------------------------------------------
def _bcast(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    return [max(x, y) if 1 in (x, y) else x for x, y in zip(a, b)]


def _matmul_out(a: list[int] | None, b: list[int] | None) -> list[int] | None:
    if not _known(a) or not _known(b) or not a or not b:
        return None
    a2 = a if len(a) > 1 else [1] + list(a)
    b2 = b if len(b) > 1 else list(b) + [1]
    out = _bcast(a2[:-2], b2[:-2]) + [a2[-2], b2[-1]]
    if len(a) == 1:
        out.pop(-2)
    if len(b) == 1:
        out.pop(-1)
    return out


def _fused_matmul_out(A: Any, B: Any, a: dict[str, Any]) -> list[int] | None:
    if not _known(A) or not _known(B) or len(A) < 2 or len(B) < 2:
        return None
    A = list(A)
    B = list(B)
    if a.get("transA", 0):
        A[-1], A[-2] = A[-2], A[-1]
    if a.get("transB", 0):
        B[-1], B[-2] = B[-2], B[-1]
    return _matmul_out(A, B)


# -- shapes for contrib ops ONNX does not know ----------------------------------------
_PASSTHROUGH_MS = {
    "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasAdd", "BiasDropout", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization", "LayerNormalization",
    "RotaryEmbedding", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax", "SkipGroupNorm", "GroupNorm",
}


def _geometry(a: dict[str, Any], in_sp: list[int | None], kernel: list[int]) -> tuple[
    list[int], list[int], list[int], list[int], bool
]:
    """(effective kernel, strides, pads_begin, pads_end, exact) of a conv or pool."""
    nd = len(kernel)
    strides = list(a.get("strides") or [1] * nd)
    dil = list(a.get("dilations") or [1] * nd)
    keff = [d * (k - 1) + 1 for k, d in zip(kernel, dil)]
    pads = list(a.get("pads") or [0] * (2 * nd))
    pb, pe = pads[:nd], pads[nd:]
    auto = str(a.get("auto_pad", "NOTSET"))
    exact = True
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pb, pe = [], []
        for i in range(nd):
            size = in_sp[i] if i < len(in_sp) else None
            if size is None:
                total = max(keff[i] - strides[i], 0)
                exact = False
            else:
                total = max((math.ceil(size / strides[i]) - 1) * strides[i] + keff[i] - size, 0)
            small, big = total // 2, total - total // 2
            pb.append(small if auto == "SAME_UPPER" else big)
            pe.append(big if auto == "SAME_UPPER" else small)
    elif auto == "VALID":
        pb, pe = [0] * nd, [0] * nd
    return keff, strides, pb, pe, exact


def _contrib_shapes(node: onnx.NodeProto, v: _View) -> list[tuple[str, int, list[int]]]:
    """Output shapes for com.microsoft ops ONNX shape inference skips."""
    op, a = node.op_type, _attrs(node)
    ins = [v.shape(x) for x in node.input]
    x0 = ins[0] if ins else None
    elem = v.elem(node.input[0]) if node.input else 1
    out: list[int] | None = None
    if op in _PASSTHROUGH_MS:
        out = x0 if _known(x0) else None
    elif op == "Attention" and _known(x0) and len(x0) == 3 and len(ins) > 1 and _known(ins[1]):
        qkv = a.get("qkv_hidden_sizes") or [ins[1][1] // 3] * 3
        out = [x0[0], x0[1], int(qkv[2])]
    elif op == "MultiHeadAttention" and _known(x0):
        val = ins[2] if len(ins) > 2 else None
        if len(x0) == 5:
            out = [x0[0], x0[1], x0[2] * x0[4]]
        elif len(x0) == 3:
            dv = val[2] if _known(val) and len(val) == 3 else (val[1] * val[3] if _known(val) and len(val) == 4 else x0[2])
            out = [x0[0], x0[1], dv]
    elif op == "GroupQueryAttention" and _known(x0) and len(x0) == 3:
        heads, kvh = int(a.get("num_heads", 0)), int(a.get("kv_num_heads", 0))
        has_kv = len(node.input) > 1 and node.input[1]
        if has_kv:
            out = list(x0)
        elif heads and kvh:
            out = [x0[0], x0[1], x0[2] // (heads + 2 * kvh) * heads]
    elif op in ("FusedMatMul", "TransposeMatMul"):
        out = _fused_matmul_out(x0, ins[1] if len(ins) > 1 else None, a)
    elif op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
        out = _matmul_out(x0, ins[1] if len(ins) > 1 else None)
        elem = TensorProto.FLOAT
    elif op == "MatMulNBits" and _known(x0) and "N" in a:
        out = list(x0[:-1]) + [int(a["N"])]
    elif op in ("FusedGemm", "QGemm"):
        bi = 3 if op == "QGemm" else 1
        A, B = x0, ins[bi] if len(ins) > bi else None
        if _known(A) and _known(B) and len(A) == 2 and len(B) == 2:
            out = [A[1] if a.get("transA") else A[0], B[0] if a.get("transB") else B[1]]
    elif op == "QLinearGlobalAveragePool" and _known(x0) and len(x0) >= 3:
        out = [x0[0]] + [1] * (len(x0) - 2) + [x0[-1]] if a.get("channels_last") else x0[:2] + [1] * (len(x0) - 2)
    elif op in ("QLinearAdd", "QLinearMul") and _known(x0) and len(ins) > 3 and _known(ins[3]):
        out = _bcast(list(x0), list(ins[3]))
    elif op == "QLinearConcat" and len(ins) >= 5:
        parts = ins[2::3]
        if parts and all(_known(q) for q in parts) and len({len(q) for q in parts}) == 1:
            ax = int(a.get("axis", 0)) % len(parts[0])
            out = list(parts[0])
            out[ax] = sum(q[ax] for q in parts)
            elem = v.elem(node.input[2])
    elif op == "QLinearAveragePool" and _known(x0) and "kernel_shape" in a and not a.get("channels_last"):
        kernel = list(a["kernel_shape"])
        keff, s, pb, pe, _ = _geometry(a, list(x0[2:]), kernel)
        rnd = math.ceil if a.get("ceil_mode") else math.floor
        out = x0[:2] + [int(rnd((x0[2 + i] + pb[i] + pe[i] - keff[i]) / s[i])) + 1 for i in range(len(kernel))]
    elif op == "FusedConv" and _known(x0) and len(ins) > 1 and _known(ins[1]):
        w = ins[1]
        kernel = list(a.get("kernel_shape") or w[2:])
        keff, s, pb, pe, _ = _geometry(a, list(x0[2:]), kernel)
        sp = [(x0[2 + i] + pb[i] + pe[i] - keff[i]) // s[i] + 1 for i in range(len(kernel))]
        out = [x0[0], w[0]] + sp
    if out is None or not node.output or not node.output[0]:
        return []
    return [(node.output[0], elem, [int(d) for d in out])]
