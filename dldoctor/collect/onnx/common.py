"""Tables and tiny helpers shared by the ONNX graph collector: dtypes, domains, node attributes."""
from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper


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


# -- domains ------------------------------------------------------------------
_STD = ""
_MS = "com.microsoft"
_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"}
_KNOWN_DOMAINS = _STANDARD_DOMAINS | {"com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc"}


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
