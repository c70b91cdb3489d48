"""Small helpers shared by the loaders (no torch import here)."""
from __future__ import annotations

import hashlib
import os

from dldoctor.errors import LoadError

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
