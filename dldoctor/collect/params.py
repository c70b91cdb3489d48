"""Parameter and buffer statistics, with tied weights counted once."""
from __future__ import annotations

import torch

from dldoctor.report.types import ParamStats


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def param_stats(module: torch.nn.Module) -> ParamStats:
    s = ParamStats()
    seen: dict[int, int] = {}
    for _, p in module.named_parameters(remove_duplicate=False):
        key = id(p)
        if key in seen:
            s.shared += p.numel()
            continue
        seen[key] = p.numel()
        n = p.numel()
        s.total += n
        if p.requires_grad:
            s.trainable += n
        else:
            s.frozen += n
        s.bytes += n * p.element_size()
        d = dtype_name(p.dtype)
        s.by_dtype[d] = s.by_dtype.get(d, 0) + n
    bseen: set[int] = set()
    for _, b in module.named_buffers(remove_duplicate=False):
        if id(b) in bseen:
            continue
        bseen.add(id(b))
        s.buffers += b.numel()
        s.buffer_bytes += b.numel() * b.element_size()
    return s


def module_param_counts(module: torch.nn.Module) -> dict[str, int]:
    """Parameters under each module path (inclusive), each tensor counted once per module."""
    out: dict[str, int] = {}
    for path, mod in module.named_modules():
        out[path] = sum(p.numel() for p in {id(p): p for p in mod.parameters()}.values())
    return out
