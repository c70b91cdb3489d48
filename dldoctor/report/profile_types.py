"""What `dldoctor profile` measures: plain data (no torch), shared by the collectors, the rules and the renderers.

It lands in `Report.profile` and in JSON under the report's `schema_version`. Times are
seconds, memory bytes, rates per second. A figure that was not measured is None, never 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dldoctor.report.timing_types import LoadInfo, Timing


@dataclass
class LatencyStats:
    """Wall time of one forward pass at one batch size, over `iters` timed runs after `warmup`."""

    batch_size: int
    iters: int = 0
    warmup: int = 0
    mean: float | None = None
    std: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None
    cv: float | None = None  # std / mean: the spread of the measurement
    noisy: bool = False  # cv above the trust threshold: treat the figures with care
    throughput: float | None = None  # samples per second at p50
    samples: list[float] = field(default_factory=list)  # every timed run (for the distribution plot)
    peak_memory: int | None = None  # CUDA: max allocated during the runs; CPU: process RSS growth
    reserved_memory: int | None = None  # CUDA: max reserved
    error: str | None = None  # this batch size could not run (e.g. out of memory)


@dataclass
class OpTime:
    """Time of one operator type, module, or ONNX node, aggregated over the profiled runs (per run)."""

    name: str
    kind: str  # "op" (aten op or ONNX op type) | "module" | "node"
    time: float  # seconds per run (self time for ops)
    share: float  # of the total
    calls: int = 0  # per run
    flops: int | None = None  # FLOPs per run, where inspect counted them
    flops_per_s: float | None = None  # achieved
    bound: str | None = None  # "compute" | "memory" | None (too little to say)
    provider: str | None = None  # ONNX Runtime execution provider


@dataclass
class WhatIf:
    """One candidate change, run for real against the baseline."""

    name: str  # "channels_last", "bf16_autocast", "inference_mode", "torch_compile", "threads", "onnxruntime", "batch"
    applicable: bool = True
    detail: str = ""  # what exactly was tried ("threads=1", "batch 32")
    p50: float | None = None  # seconds per forward (per sample where the batch changes: see `per_sample`)
    baseline_p50: float | None = None
    speedup: float | None = None  # baseline / this, per sample: the median ratio of the timing's rounds
    max_abs_diff: float | None = None  # against the baseline output
    rel_diff: float | None = None  # max |a - b| / max |a|
    tolerance: float | None = None
    within_tolerance: bool | None = None
    recommended: bool = False  # timing verdict "faster" (95% CI at or above the threshold) and within tolerance
    reason: str | None = None  # why not applicable, or why not recommended
    per_sample: bool = False
    timing: Timing | None = None  # the harness's verdict, interval and rounds (dldoctor/collect/timing.py)


@dataclass
class ProfileResult:
    config: dict[str, Any] = field(default_factory=dict)  # device, dtype, threads, warmup, iters, batch_sizes, runtime
    device_name: str | None = None
    latency: list[LatencyStats] = field(default_factory=list)  # one per batch size
    best_batch_size: int | None = None  # where throughput stops improving (within 5%)
    ops: list[OpTime] = field(default_factory=list)  # top operators
    modules: list[OpTime] = field(default_factory=list)  # top modules (PyTorch) or nodes (ONNX)
    total_flops: int | None = None  # per forward at the profiled batch size
    achieved_flops_per_s: float | None = None
    peak_flops_per_s: float | None = None  # measured with a large matmul in the same run (or known)
    peak_bandwidth: float | None = None  # bytes/s, measured with a large copy in the same run
    whatifs: list[WhatIf] = field(default_factory=list)
    overhead: float | None = None  # the profiler's own cost: profiled run / plain run
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float | None = None
    load: LoadInfo | None = None  # the machine's load around the run: busy means absolute times are inflated

    def at(self, batch_size: int) -> LatencyStats | None:
        return next((x for x in self.latency if x.batch_size == batch_size), None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileResult:
        d = dict(d)
        load = d.pop("load", None)
        return cls(latency=[LatencyStats(**x) for x in d.pop("latency", [])],
                   ops=[OpTime(**x) for x in d.pop("ops", [])], modules=[OpTime(**x) for x in d.pop("modules", [])],
                   whatifs=[WhatIf(**{**x, "timing": Timing.from_dict(x.get("timing"))}) for x in d.pop("whatifs", [])],
                   load=LoadInfo(**load) if load is not None else None, **d)
