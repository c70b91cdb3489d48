"""What `dldoctor compress` produces: plain data (no torch), shared by the transforms, the runner and the renderers.

Every variant is measured against the original in the same run; a figure not measured is None.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dldoctor.report.timing_types import LoadInfo, Timing


@dataclass
class Fidelity:
    """The variant's outputs against the original's on held inputs (first output tensor)."""

    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None  # mean over samples of the cosine similarity of the flattened outputs
    top1: float | None = None  # share of samples whose argmax (last dim) agrees; classifiers only
    metric: float | None = None  # the user's --eval metric on the variant
    metric_original: float | None = None
    samples: int = 0


@dataclass
class Variant:
    name: str  # "onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16", "torch-int8-dynamic", "torch-fp16", "prune-50", ...
    transform: str  # the transform that made it
    format: str  # "onnx" | "pytorch"
    path: str | None = None  # where it was written (None: not written, e.g. rejected)
    status: str = "pending"  # "recommended" | "kept" | "rejected" | "failed"
    reason: str | None = None  # why rejected or failed
    size_bytes: int | None = None
    params: int | None = None
    p50: float | None = None  # seconds per forward at batch 1 on the CPU
    cv: float | None = None
    p50_cuda: float | None = None  # the same on the GPU, when one is present (PyTorch variants)
    speedup_cuda: float | None = None
    pareto: bool = False  # on the size / latency / fidelity front: no other measured model is at least as
    #                       good on all three and better on one
    size_ratio: float | None = None  # original size / this
    speedup: float | None = None  # original / this: the median ratio of the interleaved rounds (see `timing`)
    timing: Timing | None = None  # the harness's verdict, 95% interval and rounds against the original
    fidelity: Fidelity = field(default_factory=Fidelity)
    preparation: list[str] = field(default_factory=list)  # what was done to make the transform work
    ops_before: dict[str, int] = field(default_factory=dict)  # op histogram (ONNX op types or module types)
    ops_after: dict[str, int] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # layers quantized / pruned / folded
    left_float: dict[str, str] = field(default_factory=dict)  # layer -> why it was left alone
    seconds: float | None = None


@dataclass
class CompressResult:
    original: Variant = field(default_factory=lambda: Variant(name="original", transform="none", format="pytorch"))
    variants: list[Variant] = field(default_factory=list)
    recommended: str | None = None  # name of the recommended variant
    optimize: str = "latency"  # "latency" | "size"
    max_drop: str | None = None  # the fidelity budget as given ("1%", "0.01")
    out_dir: str | None = None
    device: str = "cpu"
    precision: str = "fp32"  # the original's compute precision (compress --precision)
    notes: list[str] = field(default_factory=list)
    load: LoadInfo | None = None  # the machine's load around the run: busy means absolute times are inflated

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressResult:
        def var(x: dict) -> Variant:
            return Variant(**{**x, "fidelity": Fidelity(**x.get("fidelity", {})),
                              "timing": Timing.from_dict(x.get("timing"))})

        d = dict(d)
        load = d.pop("load", None)
        return cls(original=var(d.pop("original")), variants=[var(v) for v in d.pop("variants", [])],
                   load=LoadInfo(**load) if load is not None else None, **d)
