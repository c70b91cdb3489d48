"""State dicts and checkpoints: list their tensors, or load them into an --arch module."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dldoctor.errors import LoadError
from dldoctor.load.common import CHECKPOINT_KEYS, describe_exc, dtype_name
from dldoctor.types import TensorInfo

ARCH_NOTE = "FLOPs and receptive field need the architecture: pass --arch pkg.mod:factory"

_PREFIXES = ("module.", "_orig_mod.", "model.")


def is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def is_state_dict(obj: Any) -> bool:
    """A mapping of str -> tensor with at least one tensor."""
    if not isinstance(obj, Mapping) or not obj:
        return False
    return all(isinstance(k, str) for k in obj) and all(is_tensor(v) for v in obj.values())


def tensor_infos(sd: Mapping[str, Any]) -> list[TensorInfo]:
    out = []
    for k, v in sd.items():
        if is_tensor(v):
            out.append(TensorInfo(name=str(k), shape=[int(s) for s in v.shape], dtype=dtype_name(v.dtype), nbytes=_nbytes(v)))
    return out


def _nbytes(t: Any) -> int:
    try:
        return int(t.numel()) * int(t.element_size())
    except Exception:  # exotic tensor subclasses
        return 0


def find_weights(obj: Mapping) -> tuple[str, Any] | None:
    """(key, value) of the model weights inside a checkpoint dict: a state_dict or an nn.Module."""
    import torch

    for key in CHECKPOINT_KEYS:
        if key in obj:
            v = obj[key]
            if isinstance(v, torch.nn.Module) or is_state_dict(v):
                return key, v
    return None


def flatten_tensors(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Every tensor reachable through dicts/lists, by dotted name."""
    out: dict[str, Any] = {}
    if depth > 20:
        return out
    if is_tensor(obj):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_tensors(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten_tensors(v, f"{prefix}.{i}" if prefix else str(i), depth + 1))
    return out


def _strip_prefix(sd: Mapping[str, Any], wanted: set[str]) -> tuple[dict[str, Any], str | None]:
    keys = set(sd)
    if keys == wanted:
        return dict(sd), None
    best: tuple[dict[str, Any], str | None] = (dict(sd), None)
    best_hits = len(keys & wanted)
    for p in _PREFIXES:
        if all(k.startswith(p) for k in sd):
            cand = {k[len(p) :]: v for k, v in sd.items()}
            hits = len(set(cand) & wanted)
            if hits > best_hits:
                best, best_hits = (cand, p), hits
    return best


def _few(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_into(module: Any, sd: Mapping[str, Any], source: str, arch: str) -> list[str]:
    """load_state_dict(strict=True) with readable errors; returns notes."""
    notes: list[str] = []
    target = module.state_dict()
    sd, stripped = _strip_prefix(sd, set(target))
    if stripped:
        notes.append(f"stripped the '{stripped}' prefix from the weight names")
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [
        f"{k} {list(sd[k].shape)} vs {list(target[k].shape)}"
        for k in target
        if k in sd and is_tensor(sd[k]) and is_tensor(target[k]) and tuple(sd[k].shape) != tuple(target[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_few(mismatched)}")
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    hint = "check that --arch (factory and arguments such as num_classes) builds the architecture the weights were saved from"
    if problems:
        raise LoadError(f"{source}: weights do not fit --arch {arch}: " + "; ".join(problems), hint=hint)
    try:
        module.load_state_dict(sd, strict=True)
    except Exception as e:
        raise LoadError(f"{source}: load_state_dict failed for --arch {arch}: {describe_exc(e)}", hint=hint) from None
    return notes


def apply_arch(sd: Mapping[str, Any], arch: str, source: str) -> tuple[Any, list[str]]:
    from dldoctor.load.factory import build

    module, _name = build(arch, device="cpu", what="--arch")
    notes = load_into(module, sd, source, arch)
    notes.append(f"architecture from --arch {arch}")
    return module, notes
