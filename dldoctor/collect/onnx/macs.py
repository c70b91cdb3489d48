"""Multiply-accumulates of ONNX ops.

MACs come from per-op formulas (Conv, ConvTranspose, Gemm, MatMul, the integer and
QLinear variants, attention, Einsum, RNNs).  Elementwise, normalization, pooling and
data-movement ops are not multiply-accumulates and are not counted, the convention behind
torchvision's published ``_ops``.  Any other op, or a MAC op whose shapes are unknown, is
listed in ``uncounted_ops`` and the count is partial.

A formula is registered for the ops it counts with ``@_on("Conv", "com.microsoft::FusedConv")``;
``_IGNORE`` lists the ops left out, with the reason.
"""
from __future__ import annotations

from typing import Any, Callable

import onnx

from dldoctor.collect.onnx.common import _KNOWN_DOMAINS, _MS, _STD, _attrs, _dom, _known, _prod
from dldoctor.collect.onnx.shapes import _View, _fused_matmul_out, _matmul_out


# -- ops that are not counted, with the reason ---------------------------------
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


# -- MAC formulas -------------------------------------------------------------
# A formula takes (node, input shapes, output shapes, attributes, view) and returns the node's
# MACs, or None when the shapes it needs are unknown.
_Formula = Callable[[onnx.NodeProto, list[Any], list[Any], dict[str, Any], _View], int | None]
_MAC_OPS: dict[tuple[str, str], _Formula] = {}

# input slot of the second operand: the QLinear ops interleave scales and zero points
_B_SLOT = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3}


def _on(*names: str) -> Callable[[_Formula], _Formula]:
    """Register a MAC formula for ``names``: "Conv" (standard domain) or "com.microsoft::FusedConv"."""
    def deco(fn: _Formula) -> _Formula:
        for name in names:
            dom, _, op = name.rpartition("::")
            if (dom, op) in _MAC_OPS or (dom, op) in _IGNORE:
                raise ValueError(f"{name} has a MAC formula already or is listed as not counted")
            _MAC_OPS[(dom, op)] = fn
        return fn

    return deco


def _node_macs(node: onnx.NodeProto, ins: list[Any], outs: list[Any], view: _View) -> tuple[int, str | None, str | None]:
    """(MACs, why it is left out by convention, why it could not be counted) of one node."""
    key = (_dom(node), node.op_type)
    fn = _MAC_OPS.get(key)
    if fn is not None:
        try:
            macs = fn(node, ins, outs, _attrs(node), view)
        except (TypeError, ValueError, IndexError, ZeroDivisionError, KeyError):
            macs = None
        return (0, None, "shapes unknown after shape inference") if macs is None else (macs, None, None)
    if key in _IGNORE:
        return 0, _IGNORE[key], None
    if node.op_type in _CONTROL_FLOW and key[0] == "":
        return 0, None, "control flow; the subgraphs are not walked"
    return 0, None, (f"unknown custom domain {key[0]!r}" if key[0] not in _KNOWN_DOMAINS else
                     f"no MAC formula for {(key[0] + '::') if key[0] else ''}{node.op_type}")


def _matmul_macs(a: Any, b: Any, out: Any) -> int | None:
    if _known(a) and a:
        k = a[-1]
        o = out if _known(out) else _matmul_out(a, b)
        if o is not None:
            return _prod(o) * k
    return None


@_on("Conv", "ConvInteger", "QLinearConv", "DeformConv", "CausalConvWithState", "com.microsoft::FusedConv")
def _mac_conv(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    wi = _B_SLOT.get(node.op_type, 1)
    w = ins[wi] if wi < len(ins) else None
    y = outs[0] if outs else None
    if _known(w) and _known(y) and len(w) >= 2:
        return _prod(y) * _prod(w[1:])  # out elems * Cin/group * prod(kernel)
    return None


@_on("ConvTranspose")
def _mac_conv_transpose(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    if _known(x) and _known(w) and len(w) >= 2:
        return _prod(x) * _prod(w[1:])  # every input element scatters into Cout/group * prod(kernel) outputs
    return None


@_on("Gemm", "com.microsoft::FusedGemm", "com.microsoft::QGemm")
def _mac_gemm(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    bi = _B_SLOT.get(node.op_type, 1)
    A, B = ins[0], ins[bi] if bi < len(ins) else None
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


@_on("MatMul", "MatMulInteger", "QLinearMatMul", "com.microsoft::DynamicQuantizeMatMul",
     "com.microsoft::MatMulIntegerToFloat")
def _mac_matmul(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    bi = _B_SLOT.get(node.op_type, 1)
    A = ins[0] if ins else None
    B = ins[bi] if bi < len(ins) else None
    return _matmul_macs(A, B, outs[0] if outs else None)


@_on("com.microsoft::FusedMatMul", "com.microsoft::TransposeMatMul")
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


@_on("com.microsoft::MatMulNBits")
def _mac_nbits(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    A = ins[0]
    if _known(A) and A and "K" in a and "N" in a:
        return _prod(A[:-1]) * int(a["K"]) * int(a["N"])
    return None


@_on("LSTM", "GRU", "RNN")
def _mac_rnn(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    r = ins[2] if len(ins) > 2 else None
    if _known(x) and _known(w) and _known(r) and len(x) == 3:
        steps_batch = x[0] * x[1]  # seq*batch whatever the layout
        return steps_batch * (_prod(w) + _prod(r))  # gates x (input + hidden) per direction
    return None


@_on("com.microsoft::Attention")
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


@_on("com.microsoft::MultiHeadAttention")
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


@_on("com.microsoft::GroupQueryAttention")
def _mac_ms_gqa(node, ins, outs, a, v) -> int | None:  # noqa: ANN001
    q = ins[0]
    present = outs[1] if len(outs) > 1 else None
    heads = int(a.get("num_heads", 0))
    if not (_known(q) and len(q) == 3 and _known(present) and len(present) == 4 and heads):
        return None
    b, s, _ = q
    t, h = present[2], present[3]
    return 2 * b * s * t * heads * h


@_on("Attention")
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


@_on("Einsum")
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
