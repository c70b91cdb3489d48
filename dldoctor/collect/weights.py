"""Per-parameter statistics from real weights: NaN/Inf, zeros, dead and duplicate rows, scale.

Needs materialised weights: on the meta device there is nothing to look at, and
`weight_stats` returns None so the rules that need weights are reported as skipped.
"""
from __future__ import annotations

import math

import torch

from dldoctor.rules.facts import WeightStat

NEAR_ZERO = 1e-3  # |w| below this fraction of the tensor's largest |w| counts as near zero
MAX_UNIQUE_ELEMENTS = 1 << 24  # duplicate-row search is skipped for larger tensors


def weight_stats(module: torch.nn.Module) -> list[WeightStat] | None:
    params = list(module.named_parameters())
    if any(p.is_meta for _, p in params):
        return None
    owners = {}
    for path, m in module.named_modules():
        for n, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), (path, type(m).__name__))
    out = []
    with torch.no_grad():
        for name, p in params:
            path, mtype = owners.get(id(p), ("", ""))
            out.append(_stat(name, path, mtype, p))
    return out


def _stat(name: str, path: str, mtype: str, p: torch.Tensor) -> WeightStat:
    w = p.detach()
    s = WeightStat(name=name, module=path, module_type=mtype, shape=list(w.shape), dtype=str(w.dtype).replace("torch.", ""),
                   numel=w.numel(), requires_grad=p.requires_grad)
    if w.numel() == 0 or not (w.is_floating_point() or w.is_complex()):
        return s
    w = w.float()
    finite = torch.isfinite(w)
    s.nan = int(torch.isnan(w).sum())
    s.inf = int(torch.isinf(w).sum())
    v = w[finite] if (s.nan or s.inf) else w
    if v.numel():
        a = v.abs()
        s.abs_max = float(a.max())
        s.mean = float(v.mean())
        s.std = float(v.std()) if v.numel() > 1 else 0.0
        s.norm = float(torch.linalg.vector_norm(v))
        s.zeros = int((v == 0).sum())
        s.near_zero = int((a < NEAR_ZERO * s.abs_max).sum()) if s.abs_max > 0 else v.numel()
    if w.dim() >= 2:
        receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
        s.fan_in = w.shape[1] * receptive
        s.fan_out = w.shape[0] * receptive
        rows = w.reshape(w.shape[0], -1)
        s.dead_rows = int((rows.abs().amax(dim=1) == 0).sum())
        if w.numel() <= MAX_UNIQUE_ELEMENTS and w.shape[0] > 1:
            s.duplicate_rows = int(w.shape[0] - torch.unique(rows, dim=0).shape[0])
    return s
