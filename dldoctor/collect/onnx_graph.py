"""Inspect an ONNX graph: inputs, parameters, MACs, activation memory, receptive field.

Everything is read from the graph itself (onnx + numpy, no torch, nothing is run):

* symbolic input dims are pinned to concrete values (batch -> 1 unless the caller
  gives shapes), shapes are inferred on a *copy* of the model with
  ``onnx.shape_inference.infer_shapes(..., data_prop=True)``;
* MACs come from per-op formulas (Conv, ConvTranspose, Gemm, MatMul, the integer
  and QLinear variants, attention, Einsum, RNNs).  Elementwise, normalization,
  pooling and data-movement ops are not multiply-accumulates and are not counted,
  the convention behind torchvision's published ``_ops``.  Any other op, or a MAC
  op whose shapes are unknown, is listed in ``uncounted_ops`` and the count is
  partial;
* inference activation memory is a liveness walk over the topologically sorted
  nodes;
* the receptive field is propagated as (size r, jump j, effective padding p) per
  spatial dim through convolutions and pools.

The caller's ``ModelProto`` is never modified.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper, shape_inference

from dldoctor.errors import InputSpecError
from dldoctor.types import (
    COMPLETE,
    PARTIAL,
    UNAVAILABLE,
    FlopStats,
    InputInfo,
    LayerInfo,
    MemoryStats,
    ParamStats,
    ReceptiveField,
    Report,
)

__all__ = ["inspect_onnx", "DEFAULT_BATCH", "DEFAULT_SPATIAL", "DEFAULT_SEQUENCE"]

DEFAULT_BATCH = 1
DEFAULT_SPATIAL = 224
DEFAULT_SEQUENCE = 128

# -- dtypes -----------------------------------------------------------------
# elem_type -> (numpy-style name, bits per element)
_DTYPES: dict[int, tuple[str, int]] = {
    TensorProto.FLOAT: ("float32", 32),
    TensorProto.UINT8: ("uint8", 8),
    TensorProto.INT8: ("int8", 8),
    TensorProto.UINT16: ("uint16", 16),
    TensorProto.INT16: ("int16", 16),
    TensorProto.INT32: ("int32", 32),
    TensorProto.INT64: ("int64", 64),
    TensorProto.STRING: ("str", 0),
    TensorProto.BOOL: ("bool", 8),
    TensorProto.FLOAT16: ("float16", 16),
    TensorProto.DOUBLE: ("float64", 64),
    TensorProto.UINT32: ("uint32", 32),
    TensorProto.UINT64: ("uint64", 64),
    TensorProto.COMPLEX64: ("complex64", 64),
    TensorProto.COMPLEX128: ("complex128", 128),
    TensorProto.BFLOAT16: ("bfloat16", 16),
    17: ("float8_e4m3fn", 8),
    18: ("float8_e4m3fnuz", 8),
    19: ("float8_e5m2", 8),
    20: ("float8_e5m2fnuz", 8),
    21: ("uint4", 4),
    22: ("int4", 4),
    23: ("float4_e2m1", 4),
    24: ("float8_e8m0", 8),
    25: ("uint2", 2),
    26: ("int2", 2),
    27: ("float6_e2m3", 6),
    28: ("float6_e3m2", 6),
}
_FLOAT_TYPES = {1, 10, 11, 16, 17, 18, 19, 20, 23, 24, 27, 28}
_QUANT_INT_TYPES = {2, 3, 21, 22, 25, 26}  # int8/uint8 (and sub-byte) quantized weights


def _dtype_name(elem: int) -> str:
    return _DTYPES.get(elem, (f"onnx_type_{elem}", 0))[0]


def _nbytes(elem: int, numel: int) -> int | None:
    bits = _DTYPES.get(elem, ("", 0))[1]
    if not bits:
        return None
    return (numel * bits + 7) // 8


def _prod(xs: Any) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _known(s: Any) -> bool:
    return s is not None and all(isinstance(d, int) and d >= 0 for d in s)


def _num(x: float) -> float:
    """Integral floats as ints, so the JSON reads 7 rather than 7.0."""
    return int(x) if float(x).is_integer() else round(float(x), 4)


# -- op tables ----------------------------------------------------------------
_STD = ""
_MS = "com.microsoft"
_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"}
_KNOWN_DOMAINS = _STANDARD_DOMAINS | {"com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc"}

_R_ELEM = "elementwise arithmetic or activation, not a multiply-accumulate"
_R_NORM = "normalization, not counted (torchvision _ops convention)"
_R_POOL = "pooling or resampling, not counted (torchvision _ops convention)"
_R_REDUCE = "reduction, not a multiply-accumulate"
_R_SHAPE = "shape or data movement, no arithmetic"
_R_QUANT = "(de)quantization, an elementwise scale"
_R_GEN = "constant, random or window generator"
_R_MISC = "no multiply-accumulates worth counting"

_IGNORE_GROUPS: dict[str, str] = {
    _R_ELEM: (
        "Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor "
        "Ceil Celu Clip Cos Cosh CumProd CumSum Div Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual "
        "HardSigmoid HardSwish Hardmax IsInf IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Max Mean Min "
        "Mish Mod Mul Neg Not Or PRelu Pow Reciprocal Relu Round Selu Shrink Sigmoid Sign Sin Sinh Softmax "
        "Softplus Softsign Sqrt Sub Sum SwiGLU Swish Tan Tanh ThresholdedRelu Where Xor RotaryEmbedding"
    ),
    _R_NORM: (
        "BatchNormalization GroupNormalization InstanceNormalization LayerNormalization LpNormalization "
        "LRN MeanVarianceNormalization RMSNormalization"
    ),
    _R_POOL: (
        "AveragePool GlobalAveragePool GlobalLpPool GlobalMaxPool LpPool MaxPool MaxRoiPool MaxUnpool RoiAlign "
        "Resize Upsample GridSample AffineGrid"
    ),
    _R_REDUCE: (
        "ArgMax ArgMin ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd "
        "ReduceSum ReduceSumSquare TopK NegativeLogLikelihoodLoss SoftmaxCrossEntropyLoss"
    ),
    _R_SHAPE: (
        "BitCast Cast CastLike CenterCropPad Col2Im Compress Concat ConcatFromSequence DepthToSpace Dropout Expand "
        "Flatten Gather GatherElements GatherND Identity NonZero OneHot Optional OptionalGetElement "
        "OptionalHasElement Pad Range Reshape ReverseSequence Scatter ScatterElements ScatterND SequenceAt "
        "SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength Shape Size Slice "
        "SpaceToDepth Split SplitToSequence Squeeze TensorScatter Tile Transpose Trilu Unique Unsqueeze"
    ),
    _R_QUANT: "QuantizeLinear DequantizeLinear DynamicQuantizeLinear",
    _R_GEN: (
        "Constant ConstantOfShape EyeLike Bernoulli Multinomial RandomNormal RandomNormalLike RandomUniform "
        "RandomUniformLike BlackmanWindow HammingWindow HannWindow MelWeightMatrix"
    ),
    _R_MISC: "NonMaxSuppression StringConcat StringNormalizer StringSplit RegexFullMatch TfIdfVectorizer ImageDecoder",
}
_IGNORE: dict[tuple[str, str], str] = {}
for _reason, _ops in _IGNORE_GROUPS.items():
    for _op in _ops.split():
        _IGNORE[(_STD, _op)] = _reason
for _op in (
    "Gelu FastGelu BiasGelu QuickGelu BiasAdd BiasSplitGelu BiasDropout BitmaskDropout BitmaskBiasDropout "
    "RotaryEmbedding QLinearAdd QLinearMul QLinearLeakyRelu QLinearSigmoid QLinearSoftmax QLinearWhere"
).split():
    _IGNORE[(_MS, _op)] = _R_ELEM
for _op in (
    "SkipLayerNormalization SkipSimplifiedLayerNormalization SimplifiedLayerNormalization LayerNormalization "
    "EmbedLayerNormalization SkipGroupNorm GroupNorm"
).split():
    _IGNORE[(_MS, _op)] = _R_NORM
for _op in "QLinearGlobalAveragePool QLinearAveragePool NhwcMaxPool MaxpoolWithMask".split():
    _IGNORE[(_MS, _op)] = _R_POOL
for _op in "QLinearConcat GatherND Trilu Unique".split():
    _IGNORE[(_MS, _op)] = _R_SHAPE
for _op in "QuantizeLinear DequantizeLinear DynamicQuantizeLinear".split():
    _IGNORE[(_MS, _op)] = _R_QUANT

_CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}

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


# -- small helpers ------------------------------------------------------------
def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        try:
            v = helper.get_attribute_value(a)
        except Exception:  # noqa: BLE001 - an odd attribute must not stop the report
            continue
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out[a.name] = v
    return out


def _dom(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _vi_shape(vi: onnx.ValueInfoProto) -> tuple[int, list[int | None] | None]:
    t = vi.type
    if not t.HasField("tensor_type"):
        return 0, None
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type, None
    dims: list[int | None] = []
    for d in tt.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None)
    return tt.elem_type, dims


def _declared_dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _node_label(node: onnx.NodeProto, i: int) -> str:
    return node.name or f"{node.op_type}_{i}"


def _subgraph_refs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names a node's subgraphs read (If/Loop/Scan bodies)."""
    refs: set[str] = set()
    for a in node.attribute:
        graphs = []
        if a.type == onnx.AttributeProto.GRAPH:
            graphs = [a.g]
        elif a.type == onnx.AttributeProto.GRAPHS:
            graphs = list(a.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                refs.update(x for x in n.input if x and x not in local)
                refs.update(r for r in _subgraph_refs(n) if r not in local)
            refs.update(o.name for o in g.output if o.name not in local)
    return refs


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


# -- shape arithmetic, folded ---------------------------------------------------------
# ONNX's data propagation stops at Div, Mod, Cast-to-float, Range...: exporters compute head
# sizes and masks that way.  Small integer/float tensors computed from shapes and constants
# are evaluated here with numpy and fed back to shape inference as initializers.
_MAX_ROUNDS = 200  # each block whose sizes come from Shape ops needs a round of inference
_ROUNDS_BUDGET_S = 30.0
_FOLD_MAX = 4096  # elements: shape vectors, masks of short sequences; never real activations


def _np_binary(op: str, a: np.ndarray, b: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    if op == "Add":
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    if op == "Div":
        if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
            q = np.abs(a) // np.abs(b)
            return (q * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))
        return a / b
    if op == "Mod":
        return np.fmod(a, b) if attrs.get("fmod", 0) else np.mod(a, b)
    if op == "Pow":
        return np.power(a, b).astype(a.dtype)
    if op == "Equal":
        return np.equal(a, b)
    if op == "Less":
        return np.less(a, b)
    if op == "LessOrEqual":
        return np.less_equal(a, b)
    if op == "Greater":
        return np.greater(a, b)
    if op == "GreaterOrEqual":
        return np.greater_equal(a, b)
    if op == "And":
        return np.logical_and(a, b)
    if op == "Or":
        return np.logical_or(a, b)
    raise KeyError(op)


_NP_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt,
    "Reciprocal": np.reciprocal, "Not": np.logical_not, "Sign": np.sign, "Identity": lambda x: x,
    "Relu": lambda x: np.maximum(x, 0), "Round": np.round,
}
_NP_BINARY = {"Add", "Sub", "Mul", "Div", "Mod", "Pow", "Equal", "Less", "LessOrEqual", "Greater",
              "GreaterOrEqual", "And", "Or"}
_FOLDABLE = _NP_BINARY | set(_NP_UNARY) | {
    "Shape", "Size", "Cast", "CastLike", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Reshape",
    "ConstantOfShape", "Range", "Expand", "Where", "Min", "Max", "Sum", "ReduceProd", "ReduceSum", "ReduceMax",
    "ReduceMin", "Transpose", "Tile", "Flatten",
}


def _axes(a: dict[str, Any], ins: list[np.ndarray | None], idx: int = 1) -> list[int] | None:
    if "axes" in a:
        return [int(x) for x in a["axes"]]
    if len(ins) > idx and ins[idx] is not None:
        return [int(x) for x in ins[idx].reshape(-1)]
    return None


def _eval_node(n: onnx.NodeProto, ins: list[np.ndarray | None], view: _View) -> list[np.ndarray] | None:
    """numpy value of a small shape-arithmetic node, or None."""
    op, a = n.op_type, _attrs(n)
    x = ins[0] if ins else None
    if op == "Shape":
        shp = view.shape(n.input[0])
        if not _known(shp):
            return None
        start, end = int(a.get("start", 0)), a.get("end")
        return [np.array(shp[start:None if end is None else int(end)], dtype=np.int64)]
    if op == "Size":
        shp = view.shape(n.input[0])
        return [np.array(_prod(shp), dtype=np.int64)] if _known(shp) else None
    if op in _NP_UNARY:
        return [np.asarray(_NP_UNARY[op](x))]
    if op in _NP_BINARY:
        return [np.asarray(_np_binary(op, x, ins[1], a))]
    if op == "Cast":
        return [x.astype(helper.tensor_dtype_to_np_dtype(int(a["to"])))]
    if op == "CastLike":
        return [x.astype(ins[1].dtype)]
    if op == "Gather":
        return [np.take(x, ins[1].astype(np.int64), axis=int(a.get("axis", 0)))]
    if op == "Unsqueeze":
        axes = _axes(a, ins)
        if axes is None:
            return None
        r = x.ndim + len(axes)
        for ax in sorted(v % r for v in axes):
            x = np.expand_dims(x, ax)
        return [x]
    if op == "Squeeze":
        axes = _axes(a, ins)
        return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(v % x.ndim for v in axes))]
    if op == "Concat":
        return [np.concatenate([np.atleast_1d(v) for v in ins], axis=int(a.get("axis", 0)))]
    if op == "Slice":
        if "starts" in a:
            starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), a.get("axes"), None
        else:
            if len(ins) < 3 or ins[1] is None or ins[2] is None:
                return None
            starts, ends = [int(v) for v in ins[1].reshape(-1)], [int(v) for v in ins[2].reshape(-1)]
            axes = None if len(ins) < 4 or ins[3] is None else [int(v) for v in ins[3].reshape(-1)]
            steps = None if len(ins) < 5 or ins[4] is None else [int(v) for v in ins[4].reshape(-1)]
            if (len(n.input) > 3 and n.input[3] and axes is None) or (len(n.input) > 4 and n.input[4] and steps is None):
                return None
        axes = list(axes) if axes is not None else list(range(len(starts)))
        steps = steps or [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            sl[int(ax) % x.ndim] = slice(int(st), int(en), int(sp))
        return [x[tuple(sl)]]
    if op == "Reshape":
        shape = [int(v) for v in ins[1].reshape(-1)]
        if not a.get("allowzero", 0):
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [x.reshape(shape)]
    if op == "Flatten":
        ax = int(a.get("axis", 1)) % (x.ndim or 1)
        return [x.reshape(_prod(x.shape[:ax]), -1)]
    if op == "ConstantOfShape":
        shape = [int(v) for v in x.reshape(-1)]
        if _prod(shape) > _FOLD_MAX:
            return None
        val = a.get("value")
        fill = numpy_helper.to_array(val).reshape(-1) if isinstance(val, TensorProto) else np.zeros(1, np.float32)
        return [np.full(shape, fill[0], dtype=fill.dtype)]
    if op == "Range":
        start, limit, delta = (v.reshape(-1)[0] for v in ins[:3])
        if delta == 0 or max(0, math.ceil((limit - start) / delta)) > _FOLD_MAX:
            return None
        return [np.arange(start, limit, delta, dtype=ins[0].dtype)]
    if op == "Expand":
        shape = _bcast(list(x.shape), [int(v) for v in ins[1].reshape(-1)])
        if _prod(shape) > _FOLD_MAX:
            return None
        return [np.broadcast_to(x, shape).copy()]
    if op == "Tile":
        reps = [int(v) for v in ins[1].reshape(-1)]
        if _prod(x.shape) * _prod(reps) > _FOLD_MAX:
            return None
        return [np.tile(x, reps)]
    if op == "Where":
        return [np.where(x, ins[1], ins[2])]
    if op in ("Min", "Max", "Sum"):
        f = {"Min": np.minimum, "Max": np.maximum, "Sum": np.add}[op]
        out = ins[0]
        for v in ins[1:]:
            out = f(out, v)
        return [np.asarray(out)]
    if op in ("ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin"):
        axes = _axes(a, ins)
        if axes is None and a.get("noop_with_empty_axes", 0):
            return [x]
        f = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min}[op]
        ax = None if axes is None else tuple(v % x.ndim for v in axes)
        return [np.asarray(f(x, axis=ax, keepdims=bool(a.get("keepdims", 1)))).astype(x.dtype)]
    if op == "Transpose":
        return [np.transpose(x, a.get("perm"))]
    return None


def _fold_values(order: list[onnx.NodeProto], view: _View, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """New small constants computable from shapes and constants, in one topological pass."""
    new: dict[str, np.ndarray] = {}

    def val(name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in new:
            return new[name]
        if name in values:
            return values[name]
        return view.const(name)

    for n in order:
        if _dom(n) != "" or n.op_type not in _FOLDABLE or not n.output or n.output[0] in values:
            continue
        if n.op_type not in ("Shape", "Size"):
            ins = [val(x) for x in n.input]
            if any(v is None for v, x in zip(ins, n.input) if x):
                continue
            if any(v.size > _FOLD_MAX for v in ins if v is not None):
                continue
        else:
            ins = []
        try:
            with np.errstate(all="ignore"):
                outs = _eval_node(n, ins, view)
        except Exception:  # noqa: BLE001 - anything odd: leave it to shape inference
            outs = None
        if not outs:
            continue
        for name, arr in zip(n.output, outs):
            arr = np.asarray(arr)
            elem = view.elem(name)
            if elem in _NP_TO_ONNX.values():
                arr = arr.astype(helper.tensor_dtype_to_np_dtype(elem))
            if name and arr.size <= _FOLD_MAX and arr.dtype in _NP_TO_ONNX:
                new[name] = np.array(arr, order="C")
    return new


def _bad_reshapes(order: list[onnx.NodeProto], view: _View) -> list[str]:
    """Reshapes that cannot work at the chosen input shapes (a size baked in at export time)."""
    bad: list[str] = []
    for i, n in enumerate(order):
        if n.op_type != "Reshape" or _dom(n) != "" or len(n.input) < 2:
            continue
        xs, target = view.shape(n.input[0]), view.ints(n.input[1])
        if not _known(xs) or target is None:
            continue
        allowzero = int(_attrs(n).get("allowzero", 0))
        dims = [xs[k] if (d == 0 and not allowzero and k < len(xs)) else d for k, d in enumerate(target)]
        known = _prod(d for d in dims if d != -1)
        total = _prod(xs)
        if (-1 not in dims and known != total) or (-1 in dims and (known == 0 or total % known)):
            bad.append(f"{n.name or 'Reshape'} {list(xs)} -> {target}")
    return bad


def _with_folds(base: onnx.ModelProto, values: dict[str, np.ndarray],
                extra: dict[str, tuple[int, list[int]]]) -> onnx.ModelProto:
    """The analysis copy with folded nodes replaced by initializers and contrib shapes declared."""
    m = onnx.ModelProto()
    m.CopyFrom(base)
    if values:
        kept = [n for n in base.graph.node if not (n.output and all((not o) or o in values for o in n.output))]
        consumed: set[str] = {o.name for o in base.graph.output}
        for n in kept:
            consumed.update(n.input)
            consumed.update(_subgraph_refs(n))
        have = {t.name for t in m.graph.initializer} | {i.name for i in m.graph.input}
        del m.graph.node[:]
        m.graph.node.extend(kept)
        for name, arr in values.items():
            if name in consumed and name not in have:
                m.graph.initializer.append(numpy_helper.from_array(arr, name))
    for name, (elem, dims) in extra.items():
        m.graph.value_info.append(helper.make_tensor_value_info(name, elem, dims))
    return m


# -- MAC formulas -------------------------------------------------------------------
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


def _matmul_macs(a: Any, b: Any, out: Any) -> int | None:
    if _known(a) and a:
        k = a[-1]
        o = out if _known(out) else _matmul_out(a, b)
        if o is not None:
            return _prod(o) * k
    return None


def _mac_conv(xi: int, wi: int) -> Callable[..., int | None]:
    def f(node: onnx.NodeProto, ins: list[Any], outs: list[Any], a: dict[str, Any], v: _View) -> int | None:
        w = ins[wi] if wi < len(ins) else None
        y = outs[0] if outs else None
        if _known(w) and _known(y) and len(w) >= 2:
            return _prod(y) * _prod(w[1:])  # out elems * Cin/group * prod(kernel)
        return None

    return f


def _mac_conv_transpose(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    if _known(x) and _known(w) and len(w) >= 2:
        return _prod(x) * _prod(w[1:])  # every input element scatters into Cout/group * prod(kernel) outputs
    return None


def _mac_gemm(ai: int, bi: int) -> Callable[..., int | None]:
    def f(node, ins, outs, a, v):  # noqa: ANN001
        A, B = ins[ai], ins[bi] if bi < len(ins) else None
        if not _known(A) or len(A) != 2:
            return None
        k = A[0] if a.get("transA", 0) else A[1]
        m = A[1] if a.get("transA", 0) else A[0]
        if _known(B) and len(B) == 2:
            n = B[0] if a.get("transB", 0) else B[1]
            return m * k * n
        if _known(outs[0]) and len(outs[0]) == 2:
            return _prod(outs[0]) * k
        return None

    return f


def _mac_matmul(ai: int, bi: int) -> Callable[..., int | None]:
    def f(node, ins, outs, a, v):  # noqa: ANN001
        A = ins[ai] if ai < len(ins) else None
        B = ins[bi] if bi < len(ins) else None
        return _matmul_macs(A, B, outs[0] if outs else None)

    return f


def _mac_fused_matmul(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    A, B = ins[0], ins[1] if len(ins) > 1 else None
    if not _known(A) or len(A) < 2:
        return None
    k = A[-2] if a.get("transA", 0) else A[-1]
    if a.get("transBatchA", 0) or a.get("transBatchB", 0):
        return None
    if _known(outs[0]):
        return _prod(outs[0]) * k
    out = _fused_matmul_out(A, B, a)
    return None if out is None else _prod(out) * k


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


def _mac_nbits(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    A = ins[0]
    if _known(A) and A and "K" in a and "N" in a:
        return _prod(A[:-1]) * int(a["K"]) * int(a["N"])
    return None


def _mac_rnn(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    r = ins[2] if len(ins) > 2 else None
    if _known(x) and _known(w) and _known(r) and len(x) == 3:
        steps_batch = x[0] * x[1]  # seq*batch whatever the layout
        return steps_batch * (_prod(w) + _prod(r))  # gates x (input + hidden) per direction
    return None


def _mac_ms_attention(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    if not (_known(x) and len(x) == 3 and _known(w) and len(w) == 2):
        return None
    b, s, hin = x
    total = w[1]
    qkv = list(a.get("qkv_hidden_sizes") or [total // 3] * 3)
    past = ins[4] if len(ins) > 4 else None
    p = past[3] if _known(past) and len(past) == 5 else 0
    t = s + p
    return b * s * hin * total + b * s * t * qkv[0] + b * s * t * qkv[2]


def _mac_ms_mha(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    q = ins[0]
    k = ins[1] if len(ins) > 1 else None
    val = ins[2] if len(ins) > 2 else None
    if not _known(q):
        return None
    if len(q) == 5:  # packed qkv [B, S, N, 3, H]
        b, s, n, _, h = q
        d = dv = n * h
        length = s
    elif len(q) == 3:
        b, s, d = q
        if _known(k) and len(k) == 3:
            length = k[1]
        elif _known(k) and len(k) == 4:
            length = k[2]
        elif _known(k) and len(k) == 5:  # packed kv [B, L, N, 2, H]
            length = k[1]
        else:
            return None
        if _known(val) and len(val) == 3:
            dv = val[2]
        elif _known(val) and len(val) == 4:
            dv = val[1] * val[3]
        else:
            dv = d
    else:
        return None
    present = outs[1] if len(outs) > 1 else None
    t = present[2] if _known(present) and len(present) == 4 else length
    return b * s * t * d + b * s * t * dv


def _mac_ms_gqa(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    q = ins[0]
    present = outs[1] if len(outs) > 1 else None
    heads = int(a.get("num_heads", 0))
    if not (_known(q) and len(q) == 3 and _known(present) and len(present) == 4 and heads):
        return None
    b, s, _ = q
    t, h = present[2], present[3]
    return 2 * b * s * t * heads * h


def _mac_onnx_attention(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    q = ins[0]
    k = ins[1] if len(ins) > 1 else None
    val = ins[2] if len(ins) > 2 else None
    if not (_known(q) and _known(k) and _known(val)):
        return None
    if len(q) == 4:
        b, hq, s, dh = q
    elif len(q) == 3 and a.get("q_num_heads"):
        b, s, dq = q
        hq = int(a["q_num_heads"])
        dh = dq // hq
    else:
        return None
    if len(val) == 4:
        dv = val[3]
    elif len(val) == 3 and a.get("kv_num_heads"):
        dv = val[2] // int(a["kv_num_heads"])
    else:
        return None
    present = outs[1] if len(outs) > 1 else None
    if _known(present) and len(present) == 4:
        t = present[2]
    else:
        t = k[2] if len(k) == 4 else k[1]
        past = ins[4] if len(ins) > 4 else None
        if _known(past) and len(past) == 4:
            t += past[2]
    return b * hq * s * t * dh + b * hq * s * t * dv


def _mac_einsum(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    eq = str(a.get("equation", "")).replace(" ", "")
    if not eq or not all(_known(s) for s in ins):
        return None
    lhs = eq.split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(ins):
        return None
    if len(terms) == 1:
        return 0  # a transpose or a reduction
    sizes: dict[str, int] = {}
    for term, shp in zip(terms, ins):
        labels: list[str] = []
        if "..." in term:
            pre, post = term.split("...", 1)
            n_ell = len(shp) - len(pre) - len(post)
            if n_ell < 0:
                return None
            labels = list(pre) + [f"...{n_ell - i}" for i in range(n_ell)] + list(post)
        else:
            labels = list(term)
        if len(labels) != len(shp):
            return None
        for lab, d in zip(labels, shp):
            sizes[lab] = max(sizes.get(lab, 1), d)
    return (len(terms) - 1) * _prod(sizes.values())


_MAC_OPS: dict[tuple[str, str], Callable[..., int | None]] = {
    (_STD, "Conv"): _mac_conv(0, 1),
    (_STD, "ConvInteger"): _mac_conv(0, 1),
    (_STD, "QLinearConv"): _mac_conv(0, 3),
    (_STD, "DeformConv"): _mac_conv(0, 1),
    (_STD, "CausalConvWithState"): _mac_conv(0, 1),
    (_MS, "FusedConv"): _mac_conv(0, 1),
    (_STD, "ConvTranspose"): _mac_conv_transpose,
    (_STD, "Gemm"): _mac_gemm(0, 1),
    (_MS, "FusedGemm"): _mac_gemm(0, 1),
    (_MS, "QGemm"): _mac_gemm(0, 3),
    (_STD, "MatMul"): _mac_matmul(0, 1),
    (_STD, "MatMulInteger"): _mac_matmul(0, 1),
    (_STD, "QLinearMatMul"): _mac_matmul(0, 3),
    (_MS, "FusedMatMul"): _mac_fused_matmul,
    (_MS, "TransposeMatMul"): _mac_fused_matmul,
    (_MS, "DynamicQuantizeMatMul"): _mac_matmul(0, 1),
    (_MS, "MatMulIntegerToFloat"): _mac_matmul(0, 1),
    (_MS, "MatMulNBits"): _mac_nbits,
    (_MS, "Attention"): _mac_ms_attention,
    (_MS, "MultiHeadAttention"): _mac_ms_mha,
    (_MS, "GroupQueryAttention"): _mac_ms_gqa,
    (_STD, "Attention"): _mac_onnx_attention,
    (_STD, "Einsum"): _mac_einsum,
    (_STD, "LSTM"): _mac_rnn,
    (_STD, "GRU"): _mac_rnn,
    (_STD, "RNN"): _mac_rnn,
}


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


# -- parameters ------------------------------------------------------------------
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


# -- receptive field --------------------------------------------------------------------
@dataclass
class _Field:
    r: list[float]
    j: list[float]
    p: list[float]
    axes: list[int]  # tensor axes that hold the spatial dims; empty once global
    glob: bool = False
    exact: bool = True
    context: bool = False  # mixed with a global gate (squeeze-excitation, attention)


_RF_CONV = {"Conv", "ConvInteger", "QLinearConv", "FusedConv", "DeformConv", "MaxPool", "AveragePool", "LpPool"}
_RF_GLOBAL = {
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearGlobalAveragePool", "Flatten", "MatMul", "Gemm",
    "MatMulInteger", "QLinearMatMul", "FusedMatMul", "FusedGemm", "QGemm", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "MatMulNBits", "Einsum", "Attention", "MultiHeadAttention", "GroupQueryAttention",
    "LSTM", "GRU", "RNN", "NonMaxSuppression", "TopK",
}
_RF_REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
}
_RF_NONE = {"Shape", "Size", "ConstantOfShape", "EyeLike", "NonZero", "RandomNormalLike", "RandomUniformLike"}
_RF_PASS = (set(_IGNORE_GROUPS[_R_ELEM].split()) | set(_IGNORE_GROUPS[_R_NORM].split()) | set(_IGNORE_GROUPS[_R_QUANT].split())
            | {"Cast", "CastLike", "Dropout", "Identity", "Concat", "Split", "Expand", "Tile", "Trilu", "CumSum", "QLinearConcat"}
            | {op for (d, op) in _IGNORE if d == _MS and _IGNORE[(d, op)] in (_R_ELEM, _R_NORM, _R_QUANT)})


def _combine(fields: list[tuple[_Field, int | None]], out_rank: int | None) -> _Field:
    spatial = [(f, rk) for f, rk in fields if not f.glob]
    if spatial:
        f, rk = max(spatial, key=lambda t: sum(t[0].r))
        shift = (out_rank - rk) if (out_rank is not None and rk is not None) else 0
        return replace(f, axes=[x + shift for x in f.axes], exact=all(g.exact for g, _ in fields),
                       context=any(g.glob or g.context for g, _ in fields))
    f = max((f for f, _ in fields), key=lambda g: sum(g.r))
    return replace(f, exact=all(g.exact for g, _ in fields))


def _glob(f: _Field) -> _Field:
    return replace(f, axes=[], glob=True)


class _RFWalk:
    def __init__(self, view: _View, report: Report) -> None:
        self.v = view
        self.report = report
        self.fields: dict[str, _Field] = {}
        self.conv_fields: dict[int, _Field] = {}
        self.lost: Counter[str] = Counter()
        self.approx: Counter[str] = Counter()
        self.saw_conv = False
        self.last_spatial: _Field | None = None

    def rank(self, name: str) -> int | None:
        s = self.v.shape(name)
        return None if s is None else len(s)

    def seed(self, name: str, elem: int, shape: list[int]) -> None:
        if elem not in _FLOAT_TYPES or len(shape) < 3 or len(shape) > 5:
            return
        nd = len(shape) - 2
        axes = list(range(2, len(shape)))
        if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            axes = [1, 2]  # channels-last image
        self.fields[name] = _Field([1.0] * nd, [1.0] * nd, [0.0] * nd, axes)

    def set(self, name: str, f: _Field | None) -> None:
        if name and f is not None:
            self.fields[name] = f
            if not f.glob:
                self.last_spatial = f

    def step(self, idx: int, node: onnx.NodeProto) -> None:
        ins = [(self.fields.get(x), x) for x in node.input if x]
        have = [(f, x) for f, x in ins if f is not None]
        if not have:
            return
        op = node.op_type
        a = _attrs(node)
        outs = [o for o in node.output if o]
        out_rank = self.rank(outs[0]) if outs else None
        x0 = node.input[0] if node.input else ""
        f0 = self.fields.get(x0)
        try:
            if op in _RF_NONE:
                return
            if op in _RF_CONV or op in ("ConvTranspose", "SpaceToDepth", "DepthToSpace"):
                if f0 is None or f0.glob:
                    if f0 is not None:
                        self.set(outs[0], f0)
                    return
                nf = self._conv(op, node, a, f0)
                if nf is None:
                    self.lost[op] += 1
                    return
                self.set(outs[0], nf)
                if op in ("Conv", "ConvInteger", "QLinearConv", "FusedConv", "DeformConv", "ConvTranspose"):
                    self.conv_fields[idx] = nf
                return
            if op in _RF_GLOBAL:
                g = _combine([(f, self.rank(x)) for f, x in have], None)
                for o in outs:
                    self.set(o, _glob(g))
                return
            if op in _RF_REDUCE:
                self._reduce(node, a, have, outs)
                return
            if op in _RF_PASS:
                nf = _combine([(f, self.rank(x)) for f, x in have], out_rank)
                for o in outs:
                    self.set(o, nf)
                return
            handler = getattr(self, f"_op_{op}", None)
            if handler is not None and f0 is not None:
                handler(node, a, f0, outs)
                return
        except (ValueError, IndexError, TypeError, ZeroDivisionError, KeyError):
            pass
        if any(not f.glob for f, _ in have):
            self.lost[op] += 1
        else:  # a global tensor stays global whatever happens next
            for o in outs:
                self.set(o, _combine([(f, None) for f, _ in have], None))

    # geometry ops ----------------------------------------------------------------
    def _conv(self, op: str, node: onnx.NodeProto, a: dict[str, Any], f: _Field) -> _Field | None:
        xs = self.v.shape(node.input[0])
        if op in ("SpaceToDepth", "DepthToSpace"):
            b = int(a.get("blocksize", 1))
            if f.axes != list(range(2, 2 + len(f.r))):
                return None
            if op == "SpaceToDepth":
                return replace(f, r=[r + (b - 1) * j for r, j in zip(f.r, f.j)], j=[j * b for j in f.j])
            self.approx[op] += 1
            return replace(f, j=[j / b for j in f.j], exact=False)
        wi = 3 if op == "QLinearConv" else 1
        if op in ("MaxPool", "AveragePool", "LpPool"):
            kernel = list(a.get("kernel_shape") or [])
        else:
            w = self.v.shape(node.input[wi]) if len(node.input) > wi else None
            kernel = list(a.get("kernel_shape") or (w[2:] if w is not None and _known(w[2:]) else []))
        nd = len(kernel)
        if not nd or f.axes != list(range(2, 2 + nd)) or len(f.r) != nd:
            return None
        in_sp = list(xs[2:]) if xs is not None else [None] * nd
        keff, s, pb, _, exact = _geometry(a, in_sp, kernel)
        if not exact:
            self.approx[op] += 1
        if op == "ConvTranspose":
            self.approx[op] += 1
            j_out = [j / st for j, st in zip(f.j, s)]
            r_out = [r + (k - 1) * jo for r, k, jo in zip(f.r, keff, j_out)]
            start_in = [(r - 1) / 2 - p for r, p in zip(f.r, f.p)]
            start_out = [si + (b - (k - 1) / 2) / st * j for si, b, k, st, j in zip(start_in, pb, keff, s, f.j)]
            p_out = [(r - 1) / 2 - so for r, so in zip(r_out, start_out)]
            return replace(f, r=r_out, j=j_out, p=p_out, exact=False)
        self.saw_conv = True
        return replace(
            f,
            r=[r + (k - 1) * j for r, k, j in zip(f.r, keff, f.j)],
            p=[p + b * j for p, b, j in zip(f.p, pb, f.j)],
            j=[j * st for j, st in zip(f.j, s)],
            exact=f.exact and exact,
        )

    def _axes_arg(self, node: onnx.NodeProto, a: dict[str, Any], idx: int = 1) -> list[int] | None:
        if "axes" in a:
            return [int(x) for x in a["axes"]]
        if len(node.input) > idx and node.input[idx]:
            return self.v.ints(node.input[idx])
        return None

    def _reduce(self, node: onnx.NodeProto, a: dict[str, Any], have: list[tuple[_Field, str]], outs: list[str]) -> None:
        f = have[0][0]
        rank = self.rank(node.input[0])
        if f.glob or rank is None:
            self.set(outs[0], f if f.glob else _glob(f))
            return
        if node.op_type in ("ArgMax", "ArgMin"):
            axes = [int(a.get("axis", 0))]
        else:
            axes = self._axes_arg(node, a)
            if axes is None and int(a.get("noop_with_empty_axes", 0)):
                self.set(outs[0], f)
                return
        if axes is None:
            self.set(outs[0], _glob(f))
            return
        axes = sorted(x % rank for x in axes)
        if set(axes) & set(f.axes):
            self.set(outs[0], _glob(f))
            return
        if int(a.get("keepdims", 1)):
            self.set(outs[0], f)
        else:
            self.set(outs[0], replace(f, axes=[x - sum(1 for y in axes if y < x) for x in f.axes]))

    def _op_Transpose(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        rank = self.rank(node.input[0])
        perm = list(a.get("perm") or (list(range(rank))[::-1] if rank else []))
        self.set(outs[0], f if f.glob else replace(f, axes=[perm.index(x) for x in f.axes]))

    def _op_Squeeze(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        if f.glob:
            self.set(outs[0], f)
            return
        rank = self.rank(node.input[0])
        axes = self._axes_arg(node, a)
        xs = self.v.shape(node.input[0])
        if axes is None:
            if not _known(xs):
                raise ValueError
            axes = [i for i, d in enumerate(xs) if d == 1]
        axes = [x % rank for x in axes] if rank else axes
        if set(axes) & set(f.axes):
            self.set(outs[0], _glob(f))
            return
        self.set(outs[0], replace(f, axes=[x - sum(1 for y in axes if y < x) for x in f.axes]))

    def _op_Unsqueeze(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        if f.glob:
            self.set(outs[0], f)
            return
        out_rank = self.rank(outs[0])
        axes = self._axes_arg(node, a)
        if axes is None or out_rank is None:
            raise ValueError
        axes = sorted(x % out_rank for x in axes)
        kept = [i for i in range(out_rank) if i not in axes]  # kept[k] = new position of old axis k
        self.set(outs[0], replace(f, axes=[kept[x] for x in f.axes]))

    def _op_Reshape(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        xs, ys = self.v.shape(node.input[0]), self.v.shape(outs[0])
        if f.glob:
            self.set(outs[0], f)
            return
        if _known(xs) and _known(ys):
            k = len(f.axes)
            if f.axes == list(range(len(xs) - k, len(xs))) and len(ys) >= k and list(ys[-k:]) == list(xs[-k:]):
                self.set(outs[0], replace(f, axes=list(range(len(ys) - k, len(ys)))))  # spatial dims untouched
                return
        self.set(outs[0], _glob(f))

    def _op_Pad(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        if f.glob:
            self.set(outs[0], f)
            return
        rank = self.rank(node.input[0])
        pads = [int(x) for x in a["pads"]] if "pads" in a else (self.v.ints(node.input[1]) if len(node.input) > 1 else None)
        if pads is None or rank is None:
            self.approx["Pad"] += 1
            self.set(outs[0], replace(f, exact=False))
            return
        axes = self.v.ints(node.input[3]) if len(node.input) > 3 and node.input[3] else list(range(rank))
        axes = [x % rank for x in axes]
        begin = {ax: pads[i] for i, ax in enumerate(axes)}
        self.set(outs[0], replace(f, p=[p + begin.get(ax, 0) * j for p, ax, j in zip(f.p, f.axes, f.j)]))

    def _op_Slice(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        if f.glob:
            self.set(outs[0], f)
            return
        xs = self.v.shape(node.input[0])
        if "starts" in a:  # opset < 10
            starts, axes, steps = list(a["starts"]), list(a.get("axes") or range(len(a["starts"]))), None
        else:
            starts = self.v.ints(node.input[1])
            axes = self.v.ints(node.input[3]) if len(node.input) > 3 and node.input[3] else (
                list(range(len(starts))) if starts is not None else None)
            steps = self.v.ints(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if starts is None or axes is None or xs is None:
            raise ValueError
        steps = steps or [1] * len(starts)
        p, j, exact = list(f.p), list(f.j), f.exact
        for st, ax, sp in zip(starts, axes, steps):
            ax %= len(xs)
            if ax not in f.axes:
                continue
            i = f.axes.index(ax)
            size = xs[ax]
            if sp < 0 or size is None:
                exact = False
                continue
            st = max(0, st + size if st < 0 else min(st, size))
            p[i] -= st * j[i]
            j[i] *= sp
        self.set(outs[0], replace(f, p=p, j=j, exact=exact))

    def _op_Resize(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        xs, ys = self.v.shape(node.input[0]), self.v.shape(outs[0])
        if f.glob:
            self.set(outs[0], f)
            return
        if not (_known(xs) and _known(ys)):
            raise ValueError
        self.approx[node.op_type] += 1
        self.set(outs[0], replace(f, j=[j * xs[ax] / ys[ax] for j, ax in zip(f.j, f.axes)], exact=False))

    _op_Upsample = _op_Resize

    def _op_Gather(self, node, a, f, outs) -> None:  # noqa: ANN001, N802
        if f.glob:
            self.set(outs[0], f)
            return
        rank = self.rank(node.input[0])
        qs = self.v.shape(node.input[1])
        if rank is None or qs is None:
            raise ValueError
        axis = int(a.get("axis", 0)) % rank
        if axis in f.axes:
            self.set(outs[0], _glob(f))
            return
        q = len(qs)
        self.set(outs[0], replace(f, axes=[x + (q - 1 if x > axis else 0) for x in f.axes]))

    def finish(self, graph_outputs: list[str], layers_by_node: dict[int, LayerInfo]) -> ReceptiveField:
        for idx, f in self.conv_fields.items():
            if idx in layers_by_node:
                layers_by_node[idx].receptive_field = ReceptiveField(
                    status=COMPLETE if f.exact else PARTIAL,
                    size=[_num(x) for x in f.r], stride=[_num(x) for x in f.j], padding=[_num(x) for x in f.p],
                )
        if not self.saw_conv:
            return ReceptiveField(status=UNAVAILABLE, reason="no convolution or pooling on a spatial (rank 3-5 float) input")
        outs = [self.fields[o] for o in graph_outputs if o in self.fields]
        notes: list[str] = []
        status = COMPLETE
        if outs:
            f = _combine([(g, None) for g in outs], None)
        else:
            f = self.last_spatial
            status = PARTIAL
            notes.append("the graph outputs could not be traced back to a spatial input; "
                         "this is the field of the last spatial feature map reached")
        if f is None:
            return ReceptiveField(status=UNAVAILABLE, reason="lost track of the spatial dims")
        if self.lost:
            status = PARTIAL
            notes.append("spatial path lost at " + ", ".join(f"{k}×{v}" for k, v in sorted(self.lost.items())))
        if not f.exact:
            status = PARTIAL
            notes.append("approximated through " + (", ".join(sorted(self.approx)) or "ops with unknown geometry"))
        if f.context:
            notes.append("global context is mixed in by gating (squeeze-excitation/attention); "
                         "the size is the convolutional field")
        if f.glob:
            notes.append("the output follows global pooling or a flatten/matmul; size is the field of the last "
                         "spatial feature map")
        return ReceptiveField(
            status=status, size=[_num(x) for x in f.r], stride=[_num(x) for x in f.j],
            padding=[_num(x) for x in f.p], global_=f.glob, reason="; ".join(notes) or None,
        )


# -- memory ------------------------------------------------------------------------------
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


# -- the entry point ------------------------------------------------------------------------
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
        key = (_dom(n), n.op_type)
        ins = [view.shape(x) if x else None for x in n.input]
        outs = [view.shape(x) if x else None for x in n.output]
        macs: int | None = 0
        fn = _MAC_OPS.get(key)
        if fn is not None:
            try:
                macs = fn(n, ins, outs, _attrs(n), view)
            except (TypeError, ValueError, IndexError, ZeroDivisionError, KeyError):
                macs = None
            if macs is None:
                uncounted[n.op_type] += 1
                why_uncounted.setdefault(n.op_type, "shapes unknown after shape inference")
                macs = 0
        elif key in _IGNORE:
            ignored[_IGNORE[key]][n.op_type] += 1
        elif n.op_type in _CONTROL_FLOW and key[0] == "":
            uncounted[n.op_type] += 1
            why_uncounted.setdefault(n.op_type, "control flow; the subgraphs are not walked")
        else:
            uncounted[n.op_type] += 1
            why_uncounted.setdefault(
                n.op_type,
                f"unknown custom domain {key[0]!r}" if key[0] not in _KNOWN_DOMAINS else
                f"no MAC formula for {(key[0] + '::') if key[0] else ''}{n.op_type}")
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
