"""State dicts and checkpoints: list their tensors, or load them into an --arch module."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dldoctor.errors import LoadError, quote
from dldoctor.load.common import CHECKPOINT_KEYS, describe_exc, dtype_name
from dldoctor.load.limits import LIMITS, Limits, ResourceLimitError, Walk
from dldoctor.report.types import TensorInfo

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


def flatten_tensors(obj: Any, limits: Limits = LIMITS) -> dict[str, Any]:
    """Every tensor reachable through dicts/lists, by dotted name.

    A loaded pickle shares objects freely (a list referenced 16 times per level, 22 levels deep, is a
    2 KB file and 16**22 paths): each container is walked once, under the name of the first path that
    reaches it, within `limits.walk_nodes` and `limits.walk_depth` (ResourceLimitError past them)."""
    out: dict[str, Any] = {}
    walk = Walk("the checkpoint", limits)

    def visit(o: Any, prefix: str, depth: int) -> None:
        if is_tensor(o):
            walk.step(depth)
            out.setdefault(prefix or "tensor", o)
        elif isinstance(o, Mapping):
            if walk.enter(o, depth):
                for k, v in o.items():
                    visit(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        elif isinstance(o, (list, tuple)):
            if walk.enter(o, depth):
                for i, v in enumerate(o):
                    visit(v, f"{prefix}.{i}" if prefix else str(i), depth + 1)
        else:
            walk.step(depth)

    visit(obj, "", 0)
    return out


def stored_elements(t: Any) -> int | None:
    """How many distinct elements of its storage a strided tensor can reach: the span of its strides,
    capped by the storage's size. None for tensors without strides (sparse, meta, exotic subclasses)."""
    import torch

    try:
        if t.layout != torch.strided or t.is_meta:
            return None
        if t.numel() == 0:
            return 0
        span = 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))
        size = t.untyped_storage().nbytes() // max(t.element_size(), 1)
        return min(span, max(size - t.storage_offset(), 0))
    except Exception:  # noqa: BLE001 - subclasses without storage
        return None


def check_views(named: Any, path: str, limits: Limits = LIMITS) -> None:
    """Refuse a tensor whose view is larger than what it stores by more than `limits.expanded_view_bytes`.

    `torch.zeros(1).expand(50000, 50000)` saves one float and loads as 2.5e9 elements: a copy (deepcopy of
    a Parameter clones it), a forward or a statistic over it would allocate 10 GB from a 2 KB file. `named`
    yields (name, tensor)."""
    for name, t in named:
        stored = stored_elements(t)
        if stored is None:
            continue
        numel = int(t.numel())
        extra = (numel - stored) * int(t.element_size())
        if extra > limits.expanded_view_bytes:
            raise ResourceLimitError(
                f"tensor {quote(name)} is an expanded view of {stored} stored elements posing as {numel} "
                f"({extra} bytes more than it stores; limit {limits.expanded_view_bytes})",
                path,
            )


def module_tensors(module: Any) -> Any:
    """(name, tensor) of a module's parameters and buffers."""
    yield from module.named_parameters()
    yield from module.named_buffers()


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


def few(items: list[str], n: int = 3) -> str:
    """'a, b, c (+4 more)': a short list for an error line."""
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
        problems.append(f"shape mismatch: {few(mismatched)}")
    if missing:
        problems.append(f"missing keys: {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {few(unexpected)}")
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
