"""Small helpers shared by the loaders (no torch import here)."""
from __future__ import annotations

import hashlib
import os

from dldoctor.errors import LoadError, quote

SUPPORTED_HINT = (
    "dldoctor reads torch.save files (.pt/.pth/.bin: full module, state_dict or checkpoint), "
    "TorchScript, torch.export (.pt2), ONNX, safetensors, or a factory spec such as torchvision.models:resnet50"
)

CHECKPOINT_KEYS = (
    "model",
    "state_dict",
    "model_state_dict",
    "model_state",
    "net",
    "network",
    "module",
    "ema",
    "model_ema",
    "state_dict_ema",
    "ema_state_dict",
)

# dtype name (torch spelling without "torch.") -> bytes per element
ITEMSIZE = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "complex128": 16,
    "complex64": 8,
    "complex32": 4,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
}


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line and isinstance(exc, BaseException):
        line = type(exc).__name__
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


def describe_exc(exc: BaseException) -> str:
    msg = first_line(exc)
    name = type(exc).__name__
    return f"{name}: {msg}" if msg and msg != name else name


def check_file(path: str) -> None:
    """Raise LoadError unless `path` is a readable regular file."""
    if not os.path.lexists(path):
        raise LoadError(f"{path}: no such file", hint="check the path, or give a factory spec like pkg.module:build")
    if os.path.isdir(path):
        raise LoadError(
            f"{path}: is a directory, not a model file",
            hint="pass a model file; the dldoctor CLI expands folders itself",
        )
    if not os.path.exists(path):
        raise LoadError(f"{path}: no such file (broken symlink)", hint="check where the link points")
    if not os.path.isfile(path):
        raise LoadError(f"{path}: not a regular file", hint="pass a model file")
    if not os.access(path, os.R_OK):
        raise LoadError(f"{path}: permission denied", hint="make the file readable")


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                block = f.read(chunk)
                if not block:
                    break
                h.update(block)
    except OSError as e:
        raise LoadError(f"{path}: cannot read ({first_line(e)})", hint="check the file's permissions") from None
    return h.hexdigest()


def stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    root, _ = os.path.splitext(base)
    return root or base


def dtype_name(dtype) -> str:
    """torch.float32 -> 'float32'."""
    s = str(dtype)
    return s[6:] if s.startswith("torch.") else s


# ---------------------------------------------------------------------------
# zip members, inflated within LIMITS


def zip_entries(path: str) -> int | None:
    """Entries a zip's end-of-central-directory record declares (zip64 too), read before zipfile builds a
    ZipInfo for each; None when the record cannot be found (zipfile then reports the damage)."""
    import zipfile

    try:
        with open(path, "rb") as f:
            rec = zipfile._EndRecData(f)  # noqa: SLF001 - the one reader of this record; stable since Python 2
        return int(rec[zipfile._ECD_ENTRIES_TOTAL]) if rec else None  # noqa: SLF001
    except Exception:  # noqa: BLE001 - a damaged record is zipfile's to report
        return None


def check_zip(path: str, members: list, limits=None) -> None:
    """Refuse a zip with more entries than `limits.zip_members`, or a compressed member (over
    `limits.ratio_floor` bytes inflated) that inflates more than `limits.member_ratio`-fold: torch's own
    reader inflates members itself, so this runs before torch.load sees the file."""
    import zipfile

    from dldoctor.load.limits import LIMITS, over

    limits = limits or LIMITS
    if len(members) > limits.zip_members:
        raise over("the zip archive has {n} entries", len(members), limits.zip_members).at(path)
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > limits.ratio_floor:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.member_ratio:
                raise over(
                    f"zip member {{m}} inflates {{n}}-fold ({info.compress_size} bytes to {info.file_size})",
                    round(ratio),
                    limits.member_ratio,
                    m=quote(info.filename),
                ).at(path)


def read_member(z, info, path: str, limits=None) -> bytes:
    """One zip member, inflated in 1 MiB chunks and refused past `limits.member_bytes` (declared or actual)
    or past `limits.member_ratio` times its compressed size."""
    import zipfile

    from dldoctor.load.limits import LIMITS, over

    limits = limits or LIMITS
    cap = limits.member_bytes
    m = quote(info.filename)
    if info.file_size > cap:
        raise over("zip member {m} inflates to {n} bytes", info.file_size, cap, m=m).at(path)
    check_zip(path, [info], limits)
    out = bytearray()
    with z.open(info) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            out += chunk
            if len(out) > cap:
                raise over("zip member {m} inflates past {n} bytes", len(out), cap, m=m).at(path)
            if (
                info.compress_type != zipfile.ZIP_STORED
                and len(out) > limits.ratio_floor
                and len(out) > limits.member_ratio * max(info.compress_size, 1)
            ):
                raise over(
                    "zip member {m} inflates {n}-fold",
                    len(out) // max(info.compress_size, 1),
                    limits.member_ratio,
                    m=m,
                ).at(path)
    return bytes(out)
