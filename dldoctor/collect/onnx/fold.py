"""Constant folding of shape arithmetic in an ONNX graph.

ONNX's data propagation stops at Div, Mod, Cast-to-float, Range...: exporters compute head
sizes and masks that way.  Small integer/float tensors computed from shapes and constants
are evaluated here with numpy and fed back to shape inference as initializers.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dldoctor.collect.onnx.common import _attrs, _dom, _known, _prod, _subgraph_refs
from dldoctor.collect.onnx.shapes import _NP_TO_ONNX, _View, _bcast


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
