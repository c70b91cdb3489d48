"""Per-parameter statistics from real weights: NaN/Inf, zeros, dead and duplicate rows, scale.

Needs materialised weights: on the meta device there is nothing to look at, and
`weight_stats` returns None so the rules that need weights are reported as skipped.
"""
from __future__ import annotations

import math

import torch

from dldoctor.load.limits import LIMITS
from dldoctor.load.statedict import stored_elements
from dldoctor.report.facts import WeightStat

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


def _stored(w: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(c, m): a view `c` of the elements `w` stores and how many times each one appears in `w`.

    A stride-0 dimension repeats what lies below it: `torch.zeros(1).expand(50000, 50000)` stores one float
    and poses as 2.5e9. Narrowing every such dimension to its first index leaves `c`, and every element of `c`
    appears exactly m = w.numel() / c.numel() times in `w`, so counts, mean, std and norm follow from `c`
    without materialising `w`. None when `c` itself still poses as far more than it stores (overlapping
    non-zero strides): its statistics are then not taken."""
    if w.layout != torch.strided:
        return w, 1
    c = w
    for d in range(w.dim()):
        if w.stride(d) == 0 and w.shape[d] > 1:
            c = c.narrow(d, 0, 1)
    m = w.numel() // c.numel() if c.numel() else 1
    stored = stored_elements(c)
    if stored is not None and (c.numel() - stored) * c.element_size() > LIMITS.expanded_view_bytes:
        return None
    return c, m


def _stat(name: str, path: str, mtype: str, p: torch.Tensor) -> WeightStat:
    w = p.detach()
    s = WeightStat(name=name, module=path, module_type=mtype, shape=list(w.shape), dtype=str(w.dtype).replace("torch.", ""),
                   numel=w.numel(), requires_grad=p.requires_grad)
    if w.numel() == 0 or not (w.is_floating_point() or w.is_complex()):
        return s
    stored = _stored(w)
    if stored is None:  # an overlapping view posing as far more than it stores: nothing is materialised
        return s
    c, m = stored  # statistics over what is stored, each element counted m times
    c = c.float()
    # one cheap check first: almost every tensor is all finite, so skip the per-element counts
    finite_all = bool(torch.isfinite(c).all())
    if not finite_all:
        s.nan = m * int(torch.count_nonzero(torch.isnan(c)))
        s.inf = m * int(torch.count_nonzero(torch.isinf(c)))
    v = c if finite_all else c[torch.isfinite(c)]
    if v.numel():
        a = v.abs()
        s.abs_max = float(a.max())
        s.mean = float(v.mean())
        nv = v.numel() * m  # finite elements of w
        if m == 1:
            s.std = float(v.std()) if nv > 1 else 0.0
        else:  # w's sample std from v's population variance: every element of v appears m times
            s.std = float(v.var(unbiased=False) * nv / (nv - 1)) ** 0.5 if nv > 1 else 0.0
        s.norm = float(torch.linalg.vector_norm(v)) * math.sqrt(m)
        s.zeros = nv - m * int(torch.count_nonzero(v))
        s.near_zero = m * int(torch.count_nonzero(a < NEAR_ZERO * s.abs_max)) if s.abs_max > 0 else nv
    if w.dim() >= 2:
        receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
        s.fan_in = w.shape[1] * receptive
        s.fan_out = w.shape[0] * receptive
        if c.shape[0] == w.shape[0]:
            # rows of w and of c correspond one to one (the same dimensions repeat in each row)
            rows = c.reshape(c.shape[0], -1)
            s.dead_rows = int(torch.count_nonzero(rows.abs().amax(dim=1) == 0))
            if w.shape[0] > 1 and finite_all:
                s.duplicate_rows = _duplicate_rows(rows)
        else:  # dimension 0 is a stride-0 repeat: every row is the one stored row
            dead = bool((c.reshape(1, -1).abs().amax() == 0).item())
            s.dead_rows = w.shape[0] if dead else 0
            s.duplicate_rows = w.shape[0] - 1 if finite_all else 0
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
