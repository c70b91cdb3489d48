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
from dldoctor.load.statedict import ARCH_NOTE, load_into
from dldoctor.types import TensorInfo

MAX_HEADER = 100 * 1024 * 1024

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


def read_header(path: str) -> tuple[list[Entry], dict[str, Any], int]:
    """(entries, __metadata__, offset of the data section)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, "shorter than 8 bytes")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER or 8 + n > size:
            raise _bad(path, f"header length {n} does not fit a {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    data_start = 8 + n
    data_size = size - data_start
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise _bad(path, "__metadata__ is not an object")
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
        numel = 1
        for s in shape:
            numel *= s
        known = dt in DTYPES
        if known:
            tname, itemsize = DTYPES[dt]
            if numel * itemsize != end - begin:
                raise _bad(path, f"tensor {name!r} is {end - begin} bytes but {dt}{shape} needs {numel * itemsize}")
        else:
            tname = dt
        entries.append(Entry(str(name), tname, [int(s) for s in shape], begin, end, known))
    return entries, meta, data_start


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
