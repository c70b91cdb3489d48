"""TorchScript and torch.export (.pt2) archives.

Both can run code when loaded (TorchScript has no safe mode; torch.export.load
unpickles with weights_only=False), so without trust we only list what can be
read without loading: zip members, and tensor names/shapes/dtypes from
data.pkl (scanned, never unpickled) or from the .pt2 weights config (JSON).
"""
from __future__ import annotations

import warnings
import zipfile
from typing import Any

from dldoctor.errors import LoadError, quote
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import ITEMSIZE, check_zip, describe_exc, first_line, read_member, stem
from dldoctor.load.limits import ResourceLimitError, load_json
from dldoctor.load.pickle_scan import PickleLimitError, PickleScanError, list_tensors, scan
from dldoctor.report.types import TensorInfo

UNTRUSTED_NOTE = "TorchScript/torch.export archives can run code; pass --trust to load"

# torch._export.serde.schema.ScalarType
_EXPORT_DTYPES = {
    1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32", 8: "float64",
    9: "complex32", 10: "complex64", 11: "complex128", 12: "bool", 13: "bfloat16", 28: "uint16",
    29: "float8_e4m3fn", 30: "float8_e5m2", 31: "float8_e4m3fnuz", 32: "float8_e5m2fnuz", 33: "float8_e8m0fnu",
    34: "uint32", 35: "uint64",
}  # fmt: skip


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _info(name: str, shape: list[int], dtype: str) -> TensorInfo:
    return TensorInfo(name=name, shape=shape, dtype=dtype, nbytes=_numel(shape) * ITEMSIZE.get(dtype, 0))


def _torchscript_tensors(z: zipfile.ZipFile, members: list[zipfile.ZipInfo], path: str) -> list[TensorInfo] | None:
    for info in members:
        parts = info.filename.split("/")
        if parts[-1] == "data.pkl" and len(parts) <= 2:
            try:
                root = scan(read_member(z, info, path)).root
                return [_info(n, s, d) for n, s, d in list_tensors(root)]
            except PickleLimitError as e:
                raise e.refusal.at(path) from None
            except ResourceLimitError as e:
                if e.message.startswith(f"{path}: "):
                    raise
                raise e.at(path) from None
            except (PickleScanError, RecursionError):
                return None
    return None


def _export_tensors(z: zipfile.ZipFile, members: list[zipfile.ZipInfo], path: str) -> list[TensorInfo] | None:
    out: list[TensorInfo] = []
    found = False
    for info in members:
        base = info.filename.rsplit("/", 1)[-1]
        if base not in ("model_weights_config.json", "model_constants_config.json"):
            continue
        try:
            cfg = load_json(read_member(z, info, path).decode("utf-8"), f"zip member {quote(info.filename)}")
        except ResourceLimitError as e:
            if e.message.startswith(f"{path}: "):
                raise
            raise e.at(path) from None
        except (ValueError, UnicodeDecodeError):
            continue
        found = True
        entries = cfg.get("config", {}) if isinstance(cfg, dict) else {}
        if not isinstance(entries, dict):
            continue
        for name, entry in entries.items():
            meta = entry.get("tensor_meta") if isinstance(entry, dict) else None
            if not isinstance(meta, dict):
                continue
            try:
                shape = [int(s["as_int"]) for s in meta.get("sizes", [])]
            except (KeyError, TypeError, ValueError):
                shape = []  # symbolic sizes
            out.append(_info(str(name), shape, _EXPORT_DTYPES.get(meta.get("dtype"), "unknown")))
    return out if found else None


def load_archive(path: str, kind: str, members: list[zipfile.ZipInfo], opts: LoadOptions, map_location: str) -> Loaded:
    name = stem(path)
    check_zip(path, members)  # torch's readers inflate members themselves, --trust or not
    if opts.trust:
        _check_pickles(path, members)
        module = _trusted_load(path, kind, map_location)
        what = "TorchScript" if kind == "torchscript" else "torch.export"
        return Loaded(
            source=path,
            format=kind,
            module=module,
            name=name,
            notes=[f"loaded with --trust: {what} archives can run code when loaded"],
        )
    listing = [{"name": m.filename, "size": m.file_size} for m in members]
    tensors = None
    try:
        with zipfile.ZipFile(path) as z:
            tensors = _torchscript_tensors(z, members, path) if kind == "torchscript" else _export_tensors(z, members, path)
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError):
        tensors = None
    notes = [UNTRUSTED_NOTE]
    if tensors is None:
        notes.append("tensor names and shapes could not be read without loading")
    return Loaded(source=path, format=kind, archive=listing, tensors=tensors, notes=notes, name=name)


def _check_pickles(path: str, members: list[zipfile.ZipInfo]) -> None:
    """--trust runs the archive's code, but its pickles still go through the limits (a tuple a million deep
    crashes torch's C++ unpickler as surely as its Python one)."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in members:
                if info.filename.endswith(".pkl"):
                    scan(read_member(z, info, path))
    except PickleLimitError as e:
        raise e.refusal.at(path) from None
    except (PickleScanError, zipfile.BadZipFile, OSError, RuntimeError, EOFError):
        pass  # torch reports what it cannot read


def _trusted_load(path: str, kind: str, map_location: str) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(path, "rb") as f:
                if kind == "torchscript":
                    return torch.jit.load(f, map_location=map_location)
                ep = torch.export.load(f)
            return ep.module()
    except Exception as e:
        msg = describe_exc(e)
        raise LoadError(
            f"{path}: could not load the {kind} archive ({first_line(msg)})",
            hint="the file may be corrupt, or need a newer torch than the one installed",
        ) from None
