"""Hand-built profile facts for the rule cases of the PRF rules and BUD010.

The profiler's own measurements are tested against independent timings in
tests/test_profile_core.py and benchmarks/profile_bench.py; these cases pin what each
rule makes of given measurements, as the rule cases of the other families do.
"""
from __future__ import annotations

from typing import Any

from dldoctor.report.profile_types import LatencyStats, OpTime, ProfileResult, WhatIf
from tests.probe_cases import mlp


def latency(b: int, p50: float, cv: float = 0.02) -> LatencyStats:
    return LatencyStats(batch_size=b, iters=50, warmup=10, mean=p50, std=cv * p50, p50=p50, p90=p50 * 1.05,
                        p99=p50 * 1.1, min=p50 * 0.95, max=p50 * 1.2, cv=cv, noisy=cv > 0.1, throughput=b / p50)


def profile(**kw: Any) -> ProfileResult:
    base = dict(config={"device": "cpu", "dtype": "fp32", "batch_sizes": [1]}, latency=[latency(1, 0.002)])
    return ProfileResult(**{**base, **kw})


def case(prof: ProfileResult, config: dict | None = None) -> dict:
    return dict(model=mlp(depth=2), input_shape=[1, 20], profile=prof, config=config or {})


def whatif(speedup: float, rel: float = 1e-6) -> WhatIf:
    return WhatIf(name="channels_last", p50=0.002 / speedup, baseline_p50=0.002, speedup=speedup, max_abs_diff=rel,
                  rel_diff=rel, tolerance=1e-3, within_tolerance=rel <= 1e-3,
                  recommended=speedup >= 1.1 and rel <= 1e-3)


def sweep(t1: float, t16: float) -> list[LatencyStats]:
    return [latency(1, t1), latency(16, t16)]


def modules(bound: str) -> list[OpTime]:
    return [OpTime(name="0", kind="module", time=6e-4, share=0.6, flops=10_000, bound=bound),
            OpTime(name="2", kind="module", time=2e-4, share=0.2, flops=8_000, bound="compute")]
