"""The headline figures of a report, each with its status: what budgets and diffs compare.

One table, so `dldoctor diff`, the budget rules and the renderers agree on what
"model size" or "training memory" means and on when a figure is only a lower bound.
Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE, Report


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str  # "" (a count), "MACs", "FLOPs" or "bytes"
    value: int | None
    status: str  # complete | partial (a lower bound) | unavailable
    reason: str | None = None  # why partial or unavailable


# key -> (label, unit), in display order.
FIGURES: dict[str, tuple[str, str]] = {
    "params": ("parameters", ""),
    "macs": ("MACs", "MACs"),
    "flops": ("FLOPs", "FLOPs"),
    "training_flops": ("training FLOPs (one step)", "FLOPs"),
    "size": ("model size (params + buffers)", "bytes"),
    "inference_memory": ("inference memory (peak)", "bytes"),
    "training_memory": ("training memory (peak, one step)", "bytes"),
}


def figure(report: Report, key: str) -> Figure:
    """One figure of a report; a missing value is `unavailable` with the report's reason."""
    label, unit = FIGURES[key]
    f, m, p = report.flops, report.memory, report.params
    if key == "params":
        return Figure(key, label, unit, p.total, COMPLETE)
    if key == "size":
        return Figure(key, label, unit, p.bytes + p.buffer_bytes, COMPLETE)
    if key in ("macs", "flops"):
        value = f.macs if key == "macs" else f.flops
        return _status(key, label, unit, value, f.status, f.reason or "no forward pass was counted")
    if key == "training_flops":
        return _status(key, label, unit, f.training_flops, f.training_status,
                       _training_reason(f.reason) or "no training pass was counted")
    if key == "inference_memory":
        return _status(key, label, unit, m.inference_peak_bytes, COMPLETE, m.reason or "no inference pass was measured")
    if key == "training_memory":
        return _status(key, label, unit, m.training_peak_bytes, COMPLETE, m.reason or "no training pass was measured")
    raise KeyError(key)


def figures(report: Report) -> list[Figure]:
    return [figure(report, k) for k in FIGURES]


def _status(key: str, label: str, unit: str, value: int | None, status: str, reason: str) -> Figure:
    if value is None:
        return Figure(key, label, unit, None, UNAVAILABLE, reason)
    if status == UNAVAILABLE:  # a value with an unavailable status is at best a lower bound
        status = PARTIAL
    return Figure(key, label, unit, value, status, reason if status != COMPLETE else None)


def _training_reason(reason: str | None) -> str | None:
    if not reason:
        return None
    parts = [r for r in reason.split("; ") if "training" in r or "backward" in r]
    return "; ".join(parts) or reason


def growth_verdict(old: Figure, new: Figure, max_growth: float) -> str:
    """ok | exceeded | unconfirmed | unavailable, honest about lower bounds.

    A partial count is a lower bound: a partial NEW that already exceeds the limit exceeds it;
    a partial OLD makes an excess unconfirmed (the real growth is smaller); a partial NEW within
    the limit cannot be confirmed.
    """
    if old.value is None or new.value is None or UNAVAILABLE in (old.status, new.status):
        return "unavailable"
    exceeded = new.value > old.value * (1 + max_growth)
    if exceeded:
        return "exceeded" if old.status == COMPLETE else "unconfirmed"
    return "unconfirmed" if new.status == PARTIAL else "ok"
