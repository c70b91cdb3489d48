"""What the timing harness (dldoctor/collect/timing.py) says about one comparison: plain data, no torch.

A `Timing` rides on every measured what-if (`WhatIf.timing`) and compressed variant (`Variant.timing`):
the verdict, the median speedup over interleaved rounds and its bootstrap 95% interval. Only a
"faster" verdict may back a recommendation; anything else is shown with its interval and reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FASTER = "faster"
SLOWER = "slower"
SAME = "no measurable difference"
ERROR = "measurement error"  # beyond what the change can give (Amdahl, FLOPs / peak FLOP/s)
VERDICTS = (FASTER, SLOWER, SAME, ERROR)


@dataclass
class LoadInfo:
    """The machine around a measurement: 1-minute load average before and after, against the cores we may use."""

    before: float | None = None
    after: float | None = None
    cores: int | None = None
    steal: float | None = None  # share of CPU time stolen by the hypervisor meanwhile (/proc/stat); None: unknown
    busy: bool = False  # load above the cores at either end: absolute times are inflated, ratios need more rounds


@dataclass
class Timing:
    """Baseline A against variant B, timed in interleaved rounds (A B, B A, ...) with the same inputs and threads."""

    verdict: str = SAME  # faster | slower | no measurable difference | measurement error
    ratio: float | None = None  # median over rounds of A's time / B's time (> 1: B is faster)
    ci_low: float | None = None  # bootstrap 95% interval of that median
    ci_high: float | None = None
    rounds: int = 0
    reason: str | None = None  # why this verdict (the interval against the thresholds, the budget, the bound)
    baseline_s: float | None = None  # median seconds per call of A (per sample where the batch differs)
    variant_s: float | None = None  # the same for B
    calls_per_round: int = 0  # calls of each side per round
    warmup_calls: int = 0  # both sides together, until the per-call time stopped falling
    bound: float | None = None  # the largest speedup this change can give, where known
    seconds: float | None = None  # wall time of the comparison
    load: LoadInfo | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Timing | None:
        if d is None:
            return None
        d = dict(d)
        load = d.pop("load", None)
        return cls(**d, load=LoadInfo(**load) if load is not None else None)

    def interval(self) -> str:
        """'1.23× (95% CI 1.15–1.31×, 24 rounds)', or the verdict alone when nothing was measured."""
        if self.ratio is None:
            return self.verdict
        ci = "" if self.ci_low is None else f"95% CI {self.ci_low:.2f}–{self.ci_high:.2f}×, "
        return f"{self.ratio:.2f}× ({ci}{self.rounds} rounds)"
