"""Per-parameter statistics from real weights: NaN/Inf, zeros, dead and duplicate rows, scale.

Needs materialised weights: on the meta device there is nothing to look at, and
`weight_stats` returns None so the rules that need weights are reported as skipped.
"""
from __future__ import annotations

import math

import torch

from dldoctor.rules.facts import WeightStat

NEAR_ZERO = 1e-3  # |w| below this fraction of the tensor's largest |w| counts as near zero


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
    # one cheap check first: almost every tensor is all finite, so skip the per-element counts
    finite_all = bool(torch.isfinite(w).all())
    if not finite_all:
        s.nan = int(torch.count_nonzero(torch.isnan(w)))
        s.inf = int(torch.count_nonzero(torch.isinf(w)))
    v = w if finite_all else w[torch.isfinite(w)]
    if v.numel():
        a = v.abs()
        s.abs_max = float(a.max())
        s.mean = float(v.mean())
        s.std = float(v.std()) if v.numel() > 1 else 0.0
        s.norm = float(torch.linalg.vector_norm(v))
        s.zeros = v.numel() - int(torch.count_nonzero(v))
        s.near_zero = int(torch.count_nonzero(a < NEAR_ZERO * s.abs_max)) if s.abs_max > 0 else v.numel()
    if w.dim() >= 2:
        receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
        s.fan_in = w.shape[1] * receptive
        s.fan_out = w.shape[0] * receptive
        rows = w.reshape(w.shape[0], -1)
        s.dead_rows = int(torch.count_nonzero(rows.abs().amax(dim=1) == 0))
        if w.shape[0] > 1 and finite_all:
            s.duplicate_rows = _duplicate_rows(rows)
    return s


def _duplicate_rows(rows: torch.Tensor) -> int:
    """Rows equal to an earlier row. Rows are hashed by a fixed random projection (sorting
    whole rows is far slower), and rows whose hashes collide are compared exactly."""
    gen = torch.Generator().manual_seed(0)
    key = rows.double() @ torch.randn(rows.shape[1], dtype=torch.float64, generator=gen)
    order = torch.argsort(key)
    k = key[order]
    same = torch.nonzero(k[1:] == k[:-1]).flatten()
    dup = 0
    for i in same.tolist():
        if torch.equal(rows[order[i]], rows[order[i + 1]]):
            dup += 1
    return dup
