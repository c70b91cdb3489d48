"""safetensors: 8-byte little-endian header length, a JSON header, then raw tensor bytes.

The header is parsed here (no safetensors package needed) and every offset is
checked against the file before anything is read.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from dldoctor.errors import LoadError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import stem
from dldoctor.load.limits import LIMITS, Limits, ResourceLimitError, check_json_depth, load_json, over
from dldoctor.load.statedict import ARCH_NOTE, load_into
from dldoctor.report.types import TensorInfo


# safetensors dtype -> (torch spelling, bytes per element)
DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E8M0": ("float8_e8m0fnu", 1),
    "C64": ("complex64", 8),
    "C128": ("complex128", 16),
}


@dataclass
class Entry:
    name: str
    dtype: str  # torch spelling, or the raw safetensors name when unknown
    shape: list[int]
    begin: int  # offset in the data section
    end: int
    known: bool


def _bad(path: str, why: str) -> LoadError:
    return LoadError(
        f"{path}: not a model file dldoctor can read (corrupt safetensors header: {why})",
        hint="the file may be truncated or damaged; download or save it again",
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(k)
        out[k] = v
    return out


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def read_header(path: str, limits: Limits = LIMITS) -> tuple[list[Entry], dict[str, Any], int]:
    """(entries, __metadata__, offset of the data section).

    Everything the header says is checked against the file and LIMITS before it is used: header size,
    tensor count (absolute and per data byte), nesting, duplicate names, known dtypes, shape x itemsize ==
    the byte range, ranges inside the data section and not overlapping one another."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, "shorter than 8 bytes")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or 8 + n > size:
            raise _bad(path, f"header length {n} does not fit a {size}-byte file")
        if n > limits.safetensors_header_bytes:
            raise over("the safetensors header is {n} bytes", n, limits.safetensors_header_bytes).at(path)
        raw = f.read(n)
    data_size = size - 8 - n
    # a cheap count before parsing: json.loads of 800k entries takes seconds and ~0.5 GB
    _check_count(path, raw.count(b'"data_offsets"'), data_size, limits)
    try:
        header = _load_header(raw, limits)
    except _Duplicate as e:
        raise _bad(path, f"the header names {e.key!r} twice") from None
    except ResourceLimitError as e:
        raise e.at(path) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    data_start = 8 + n
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise _bad(path, "__metadata__ is not an object")
    try:
        check_json_depth(meta, "the safetensors __metadata__", limits)
    except ResourceLimitError as e:
        raise e.at(path) from None
    _check_count(path, len(header), data_size, limits)
    entries: list[Entry] = []
    for name, e in header.items():
        if not isinstance(e, dict):
            raise _bad(path, f"entry {name!r} is not an object")
        dt, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if not isinstance(dt, str):
            raise _bad(path, f"entry {name!r} has no dtype")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise _bad(path, f"entry {name!r} has a bad shape")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise _bad(path, f"entry {name!r} has bad data_offsets")
        begin, end = offs
        if not 0 <= begin <= end <= data_size:
            raise _bad(path, f"tensor {name!r} bytes [{begin}, {end}) lie outside the {data_size}-byte data section")
        if dt not in DTYPES:
            raise _bad(path, f"tensor {name!r} has dtype {dt!r}, not one dldoctor knows (F32, BF16, I64, ...)")
        numel = 1
        for s in shape:
            numel *= s
        tname, itemsize = DTYPES[dt]
        if numel * itemsize != end - begin:
            raise _bad(path, f"tensor {name!r} is {end - begin} bytes but {dt}{shape} needs {numel * itemsize}")
        entries.append(Entry(str(name), tname, [int(s) for s in shape], begin, end, True))
    spans = sorted((e.begin, e.end, e.name) for e in entries if e.end > e.begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise _bad(path, f"tensors {n0!r} [{b0}, {e0}) and {n1!r} [{b1}, {e1}) overlap")
    return entries, meta, data_start


def _check_count(path: str, count: int, data_size: int, limits: Limits) -> None:
    if count > limits.safetensors_tensors:
        raise over("the safetensors header lists {n} tensors", count, limits.safetensors_tensors).at(path)
    allowed = limits.safetensors_free_tensors + data_size // limits.safetensors_bytes_per_tensor
    if count > allowed:
        raise over(
            f"the safetensors header lists {{n}} tensors for {data_size} bytes of data "
            f"({limits.safetensors_free_tensors} + one per {limits.safetensors_bytes_per_tensor} bytes)",
            count,
            allowed,
        ).at(path)


def _load_header(raw: bytes, limits: Limits) -> Any:
    return load_json(raw.decode("utf-8"), "the safetensors header", limits, object_pairs_hook=_no_duplicates)


def _read_tensors(path: str, entries: list[Entry], data_start: int) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    with open(path, "rb") as f:
        for e in entries:
            if not e.known:
                raise LoadError(f"{path}: tensor {e.name!r} has dtype {e.dtype}, which dldoctor cannot read", hint="convert the weights")
            dtype = getattr(torch, e.dtype, None)
            if dtype is None:
                raise LoadError(f"{path}: this torch has no dtype {e.dtype} (tensor {e.name!r})", hint="upgrade torch")
            if e.end == e.begin:
                out[e.name] = torch.empty(e.shape, dtype=dtype)
                continue
            f.seek(data_start + e.begin)
            buf = bytearray(f.read(e.end - e.begin))
            if len(buf) != e.end - e.begin:
                raise _bad(path, f"tensor {e.name!r} is truncated")
            t = torch.frombuffer(buf, dtype=dtype).reshape(e.shape)
            out[e.name] = t
    return out


def load_safetensors(path: str, opts: LoadOptions) -> Loaded:
    import sys

    entries, meta, data_start = read_header(path)
    name = stem(path)
    notes: list[str] = []
    if meta:
        shown = ", ".join(f"{k}={str(v)[:40]}" for k, v in list(meta.items())[:5])
        notes.append(f"safetensors metadata: {shown}")
    if opts.arch:
        if sys.byteorder != "little":  # pragma: no cover
            raise LoadError(f"{path}: reading safetensors needs a little-endian machine", hint="run on x86/ARM")
        from dldoctor.load.factory import build

        module, _ = build(opts.arch, device="cpu", what="--arch")
        sd = _read_tensors(path, entries, data_start)
        notes += load_into(module, sd, path, opts.arch)
        notes.append(f"architecture from --arch {opts.arch}")
        return Loaded(source=path, format="safetensors", module=module, notes=notes, name=name)
    tensors = [TensorInfo(name=e.name, shape=e.shape, dtype=e.dtype, nbytes=e.end - e.begin) for e in entries]
    notes.append(ARCH_NOTE)
    return Loaded(source=path, format="safetensors", tensors=tensors, notes=notes, name=name)
