"""Tell formats apart from a file's bytes (never its extension)."""
from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass, field

from dldoctor.load.common import check_file, zip_entries
from dldoctor.load.limits import LIMITS, over
from dldoctor.load.pickle_scan import PickleLimitError, PickleScanError, is_torch_legacy, scan

# What detect_format returns.
TORCH_PICKLE = "torch-pickle"  # torch.save: zip with data.pkl, or the legacy pickle stream
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch-export"
ONNX = "onnx"
SAFETENSORS = "safetensors"
PICKLE = "pickle"  # a Python pickle that torch.save did not write
UNKNOWN = "unknown"

KINDS = (TORCH_PICKLE, TORCHSCRIPT, TORCH_EXPORT, ONNX, SAFETENSORS, PICKLE, UNKNOWN)

_HEAD = 64 * 1024
_PLAIN_PICKLE_SCAN_LIMIT = 16 * 1024 * 1024

# ModelProto field number -> protobuf wire type
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


@dataclass
class Sniff:
    kind: str
    reason: str = ""  # why UNKNOWN, for the error message
    members: list[zipfile.ZipInfo] = field(default_factory=list)  # zip entries


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        if i >= len(buf):
            raise IndexError
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def looks_like_onnx(head: bytes, size: int) -> bool:
    """Cheap check of a ModelProto: field 1 (ir_version, varint) first, then known fields."""
    if len(head) < 4 or head[0] != 0x08:
        return False
    fields = 0
    try:
        ir_version, i = _read_varint(head, 1)
        if not 1 <= ir_version <= 64:
            return False
        fields = 1
        while i < len(head):
            tag, i = _read_varint(head, i)
            num, wire = tag >> 3, tag & 7
            if num not in _ONNX_FIELDS or _ONNX_FIELDS[num] != wire:
                return False
            if wire == 0:
                _, i = _read_varint(head, i)
            else:
                length, i = _read_varint(head, i)
                if i + length > size:
                    return False
                i += length
            fields += 1
        return fields >= 2
    except IndexError:  # ran past the head while reading a field: fine so far
        return fields >= 2
    except ValueError:
        return False


def looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _zip_kind(members: list[zipfile.ZipInfo]) -> str | None:
    # entries are "<prefix>/<name>"; the prefix is the saved file's stem, so only look below it
    split = [m.filename.split("/") for m in members]
    for parts in split:
        if (2 <= len(parts) <= 3 and parts[-1] in ("archive_format", "serialized_exported_program.json")) or (
            len(parts) >= 3 and parts[1] == "models" and parts[-1].endswith(".json")
        ):
            return TORCH_EXPORT
    for parts in split:
        if (len(parts) == 2 and parts[1] == "constants.pkl") or (len(parts) >= 3 and parts[1] == "code"):
            return TORCHSCRIPT
    for parts in split:
        if parts[-1] == "data.pkl" and len(parts) <= 2:
            return TORCH_PICKLE
    return None


def _plain_pickle(path: str, head: bytes, size: int) -> bool:
    """A whole, well-formed pickle that is not torch's legacy format."""
    if not head:
        return False
    first = head[0]
    if first == 0x80:  # PROTO
        if len(head) < 2 or not 2 <= head[1] <= 5:
            return False
    elif chr(first) not in "(cI]}lNVSFLK)q":
        return False
    if size > _PLAIN_PICKLE_SCAN_LIMIT:
        return first == 0x80
    try:
        with open(path, "rb") as f:
            scan(f)
    except PickleLimitError:
        return True  # a pickle past the limits: load_plain_pickle refuses it by name
    except PickleScanError:
        return False
    return True


def sniff(path: str) -> Sniff:
    """Classify `path` by its bytes. Raises LoadError for missing files and folders."""
    check_file(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if size == 0:
        return Sniff(UNKNOWN, "empty file")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        entries = zip_entries(path)  # before zipfile builds a ZipInfo for each
        if entries is not None and entries > LIMITS.zip_members:
            raise over("the zip archive declares {n} entries", entries, LIMITS.zip_members).at(path)
        try:
            with zipfile.ZipFile(path) as z:
                members = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            return Sniff(UNKNOWN, f"truncated or corrupt zip archive: {e}")
        kind = _zip_kind(members)
        if kind is None:
            return Sniff(UNKNOWN, "a zip archive without data.pkl, TorchScript code or a torch.export program", members)
        return Sniff(kind, "", members)
    if head[:1] == b"\x80" and is_torch_legacy(head[:64]):
        return Sniff(TORCH_PICKLE)
    if looks_like_safetensors(head, size):
        return Sniff(SAFETENSORS)
    if looks_like_onnx(head, size):
        return Sniff(ONNX)
    if _plain_pickle(path, head, size):
        return Sniff(PICKLE)
    sample = head[:4096]
    if b"\x00" not in sample:
        try:
            sample.decode("utf-8")
            return Sniff(UNKNOWN, "a text file")
        except UnicodeDecodeError:
            pass
    return Sniff(UNKNOWN, "unrecognised bytes")


def detect_format(path: str) -> str:
    """The container format of `path`, from its bytes: one of KINDS.

    "torch-pickle" covers torch.save files (full module, state_dict or
    checkpoint: which one needs a safe load to tell). Raises LoadError when
    the path is missing or a folder.
    """
    return sniff(path).kind
