"""`dldoctor.watch` under torch.distributed: the statistics of the whole job, agreed on by every rank.

The Recorder (collect/probe.py) measures what its own rank sees; this module turns those local
measurements into the job's: sufficient statistics (sums, sums of squares, counts, one count per unit)
are summed over the ranks with one `all_reduce`, so that

- gradient and weight norms of a sharded parameter (a DTensor: FSDP2's `fully_shard`, Shard(0)) are
  `sqrt` of the squared norms of the local shards summed over the ranks; a replicated copy (a plain
  tensor under DDP, a Replicate placement of a DTensor) is counted once, by the rank whose coordinate
  on every replicated mesh dimension is 0;
- activation statistics (mean, std, zero share, dead units, saturation) are those of the global batch:
  every rank contributes its own samples' counts;
- the loss of a step is the mean over the ranks of the losses they logged.

Collectives run only on recorded steps, in the same order on every rank: `agree` (an `all_gather_object`
of the layers each rank saw and of an "ok" flag) and then `all_reduce` of one float64 buffer whose layout
follows from the agreed metadata alone, so a layer seen on one rank only cannot make the ranks disagree
on its size. Every collective carries the ranks' failure flags: a rank whose hook failed keeps taking
part until a collective tells every rank, at once, that the monitor stops.
"""
from __future__ import annotations

import math
import sys
from datetime import timedelta
from typing import Any

import torch

STATS = ("n", "s1", "s2", "nonfinite", "zeros", "zero_n", "varies", "sat", "sat_n")  # per layer, then the units
PARAM_STATS = ("w_sq", "g_present", "g_sq", "g_zero", "g_bad", "g_numel")  # per parameter
AGREE_TIMEOUT_S = 60.0  # how long the first recorded step waits for every rank to have created its watch


def dtensor_type() -> type | None:
    """DTensor, if something already imported it (no tensor is a DTensor otherwise): importing it here would
    cost half a second and sympy on every probe."""
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None) if mod is not None else None


def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """The part of `t` this rank holds (a DTensor's local shard; any other tensor itself)."""
    if t is None:
        return None
    dt = dtensor_type()
    return t.to_local() if dt is not None and isinstance(t, dt) else t


def is_dtensor(t: Any) -> bool:
    dt = dtensor_type()
    return dt is not None and isinstance(t, dt)


class DistSync:
    """The collectives of one watch: the job's process group, this rank, and whether collectives still run."""

    def __init__(self, group: Any = None, params: list[torch.Tensor] | None = None) -> None:
        import torch.distributed as dist

        self.dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.broken: str | None = None  # a collective itself failed: no collective runs again on this rank
        backend = str(dist.get_backend(group))
        dev = next((local(p).device for p in (params or []) if local(p) is not None), torch.device("cpu"))
        self.device = torch.device("cpu") if backend == "gloo" or dev.type == "meta" else dev
        if "nccl" in backend and self.device.type != "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._checked = False
        self.failed_rank: int | None = None

    # -- which copy of a parameter counts --------------------------------------------------------
    def owns(self, t: torch.Tensor) -> bool:
        """Does this rank's copy of `t` count in a sum over the ranks? Shards always; a replicated copy once."""
        if not is_dtensor(t):
            return self.rank == 0  # DDP and a manual all-reduce keep every rank's plain tensor equal
        from torch.distributed.tensor import Replicate

        coord = t.device_mesh.get_coordinate()
        if coord is None:  # this rank is not in the tensor's mesh
            return False
        return all(c == 0 for c, pl in zip(coord, t.placements) if isinstance(pl, Replicate))

    # -- collectives -----------------------------------------------------------------------------
    def every_rank_watches(self) -> bool:
        """Once, before the first collective: has every rank of the group created this watch? A watch made on
        rank 0 alone would otherwise leave rank 0 waiting in a collective the others never join."""
        if self._checked:
            return True
        self._checked = True
        try:
            from torch.distributed.distributed_c10d import _get_default_store

            store = _get_default_store()
        except Exception:  # noqa: BLE001 - no store to ask: trust that every rank watches (documented)
            return True
        key = "dldoctor/watch/" + str(_next_id(self))
        try:
            if store.add(key, 1) < self.world:
                store.wait([key + "/all"], timedelta(seconds=AGREE_TIMEOUT_S))
            else:
                store.set(key + "/all", "1")
        except Exception:  # noqa: BLE001 - timed out: not every rank watches
            return False
        return True

    def agree(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, mine, group=self.group)
        return out

    def pack(self, values: list[torch.Tensor] | None, size: int) -> torch.Tensor:
        """The buffer this rank hands to the all_reduce: `values` flattened in order (float64, on the
        collective's device), then its failure flag and rank. `values` None (this rank failed), or of another
        size than the `size` the ranks agreed on: zeros and the flag. Everything that can fail locally happens
        here, before the collective, so a rank never skips an all_reduce the others have entered."""
        if values is not None:
            try:
                buf = torch.cat([v.to(self.device, torch.float64).reshape(-1) for v in values]) if values else \
                    torch.zeros(0, dtype=torch.float64, device=self.device)
                if buf.numel() == size:
                    flag = torch.zeros(2, dtype=torch.float64, device=self.device)
                    return torch.cat([buf, flag])
            except Exception:  # noqa: BLE001 - this rank takes part with zeros and the failure flag
                pass
        return self.failed_buffer(size)

    def failed_buffer(self, size: int) -> torch.Tensor:
        buf = torch.zeros(size + 2, dtype=torch.float64, device=self.device)
        buf[-2], buf[-1] = 1.0, float(self.rank + 1)
        return buf

    def allreduce(self, buf: torch.Tensor) -> tuple[list[float], bool]:
        """Sum a packed buffer over the ranks: the values, and whether any rank failed (`failed_rank` then
        names it when exactly one did)."""
        self.dist.all_reduce(buf, group=self.group)
        vals = buf.tolist()
        n_failed, who = vals[-2], vals[-1]
        self.failed_rank = int(who) - 1 if n_failed == 1 else None
        return vals[:-2], n_failed > 0


_IDS = [0]


def _next_id(sync: DistSync) -> int:
    """The n-th distributed watch of this process: the same number on every rank that creates the same watches."""
    _IDS[0] += 1
    return _IDS[0]


# -- layers: sufficient statistics of one rank's activations --------------------------------------


def layer_stats(tf: torch.Tensor, sample: torch.Tensor, relu_dim: int | None, x: torch.Tensor | None,
                saturation: float) -> tuple[torch.Tensor, int | None]:
    """One rank's sums for a layer output `tf` (float32, detached): a float64 vector (STATS, then one
    count of non-zero values per unit when `relu_dim` is the unit dimension of a ReLU output), and the units."""
    f64 = torch.float64
    s = sample.to(f64)
    fin = torch.isfinite(s)
    sv = torch.where(fin, s, torch.zeros((), dtype=f64, device=s.device))
    n, s1, s2 = fin.sum().to(f64), sv.sum(), (sv * sv).sum()
    nonfinite = (tf.numel() - torch.isfinite(tf).sum()).to(f64)
    zero_dev = torch.zeros((), dtype=f64, device=tf.device)
    units = None
    per_unit: list[torch.Tensor] = []
    if relu_dim is not None:
        zero = tf == 0
        zeros, zero_n = zero.sum().to(f64), torch.tensor(float(tf.numel()), dtype=f64, device=tf.device)
        dims = tuple(i for i in range(tf.dim()) if i != relu_dim)
        per_unit = [(~zero).sum(dim=dims).to(f64)]
        units = int(tf.shape[relu_dim])
        varies = ((tf[1:] != tf[:1]).any() | ~tf.any()).to(f64) if tf.shape[0] > 1 else zero_dev
    else:
        zeros = (sample.numel() - torch.count_nonzero(sample)).to(f64)
        zero_n = torch.tensor(float(sample.numel()), dtype=f64, device=tf.device)
        varies = zero_dev
    if x is not None:
        xa = x.detach().float().abs()
        sat, sat_n = (xa > saturation).sum().to(f64), torch.tensor(float(xa.numel()), dtype=f64, device=tf.device)
    else:
        sat, sat_n = zero_dev, zero_dev
    head = torch.stack([n, s1, s2, nonfinite, zeros, zero_n, varies, sat, sat_n])
    return (torch.cat([head, *per_unit]) if per_unit else head), units


def layer_result(vals: list[float], units: int | None, saturating: bool) -> dict[str, Any]:
    """The per-step statistics of a layer (the keys the Recorder commits) from the sums over every rank."""
    n, s1, s2, nonfinite, zeros, zero_n, varies, sat, sat_n = vals[:len(STATS)]
    mean = s1 / n if n > 0 else None
    std = None
    if n > 1:
        var = (s2 - s1 * s1 / n) / (n - 1)
        std = math.sqrt(max(var, 0.0)) if math.isfinite(var) else None
    st: dict[str, Any] = {"nonfinite": int(nonfinite), "mean": mean, "std": std,
                          "zero_frac": zeros / zero_n if zero_n > 0 else None, "dead_frac": None, "units": None,
                          "saturated_frac": sat / sat_n if saturating and sat_n > 0 else None}
    counts = vals[len(STATS):]
    if units and len(counts) == units:
        dead = sum(1 for c in counts if c == 0) / units
        if dead == 0 or varies > 0:  # identical samples make "0 for every sample" meaningless
            st["dead_frac"], st["units"] = dead, units
    return st


# -- parameters -------------------------------------------------------------------------------------


def _sq(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t, dtype=torch.float64) ** 2


def param_stats(sync: DistSync, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """This rank's share of PARAM_STATS for every parameter (zeros for a copy another rank counts)."""
    out: list[torch.Tensor] = []
    dev = sync.device
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    for p in params:
        w = local(p.detach())
        if not sync.owns(p) or w is None:
            out += [zero] * len(PARAM_STATS)
            continue
        g = p.grad
        stats = [_sq(w)]
        if g is None:
            stats += [zero] * (len(PARAM_STATS) - 1)
        else:
            gl = local(g.detach())
            fin = torch.isfinite(gl)
            bad = (gl.numel() - fin.sum()).to(torch.float64)
            one = torch.ones((), dtype=torch.float64, device=gl.device)
            stats += [one, _sq(torch.where(fin, gl, gl.new_zeros(()))),
                      (gl.numel() - torch.count_nonzero(gl)).to(torch.float64), bad, one * gl.numel()]
        out += [s.to(dev, torch.float64) for s in stats]
    return out


def snapshot(sync: DistSync, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """Copies of the local parts this rank counts, to measure the update after the step."""
    return [local(p.detach()).clone() if sync.owns(p) else None for p in params]


def update_stats(params: list[torch.Tensor], before: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Per parameter: this rank's squared norm of the update and of the weights before it."""
    out: list[torch.Tensor] = []
    zero = torch.zeros((), dtype=torch.float64)
    for p, b in zip(params, before):
        if b is None:
            out += [zero, zero]
        else:
            out += [_sq(local(p.detach()) - b), _sq(b)]
    return out
