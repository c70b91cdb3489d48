"""What a training probe records: plain data (no torch), shared by the probe, the rules and the renderers.

`dldoctor probe` and `dldoctor.watch` fill a `ProbeResult`; it lands in `Report.probe`
and in JSON under the report's `schema_version` (see docs/report-schema.md). Every
statistic is per recorded step; `steps` lists which steps were recorded (every step for
the probe, every `every`-th for `watch`). A figure that could not be measured is None,
never 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Histogram:
    """Counts of values between consecutive edges (len(edges) == len(counts) + 1); non-finite values left out."""

    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


@dataclass
class LayerProbe:
    """The output of one leaf module, per recorded step (lists aligned with ProbeResult.steps)."""

    path: str
    type: str
    order: int  # position in the forward pass (first call)
    mean: list[float | None] = field(default_factory=list)
    std: list[float | None] = field(default_factory=list)
    zero_frac: list[float | None] = field(default_factory=list)  # share of output values exactly 0
    dead_frac: list[float | None] = field(default_factory=list)  # share of units (channels/features) 0 for every sample
    saturated_frac: list[float | None] = field(default_factory=list)  # sigmoid/tanh: share of inputs beyond ±saturation
    nonfinite: list[int] = field(default_factory=list)  # NaN/Inf values in the output
    units: int | None = None  # channels (conv) or features (dense) judged by dead_frac
    hist_first: Histogram | None = None  # output values at the first recorded step
    hist_last: Histogram | None = None  # ... and at the last


@dataclass
class ParamProbe:
    """One trainable parameter, per recorded step (lists aligned with ProbeResult.steps)."""

    name: str
    module: str
    module_type: str
    shape: list[int]
    numel: int
    requires_grad: bool = True
    grad_norm: list[float | None] = field(default_factory=list)  # None: no gradient reached it that step
    grad_zero_frac: list[float | None] = field(default_factory=list)
    weight_norm: list[float | None] = field(default_factory=list)
    update_ratio: list[float | None] = field(default_factory=list)  # ||w_after - w_before|| / ||w_before|| of that step
    grad_nonfinite: list[int] = field(default_factory=list)
    changed: bool | None = None  # differs from its starting value after the run
    grad_hist_first: Histogram | None = None
    grad_hist_last: Histogram | None = None


@dataclass
class ProbeResult:
    config: dict[str, Any] = field(default_factory=dict)  # steps, lr, optimizer, loss, batch_size, seed, device, data, every
    steps: list[int] = field(default_factory=list)  # the recorded step numbers (0-based)
    loss: list[float | None] = field(default_factory=list)  # every step's loss (None when not finite)
    loss_nonfinite_step: int | None = None
    expected_initial_loss: float | None = None  # what the head and loss predict at chance (ln C for C classes)
    num_classes: int | None = None
    layers: list[LayerProbe] = field(default_factory=list)
    params: list[ParamProbe] = field(default_factory=list)
    # the first NaN/Inf: {"step", "kind": "loss"|"activation"|"gradient"|"weight", "where"}
    first_nonfinite: dict[str, Any] | None = None
    # does each output depend only on its own sample? {"checked", "mixed", "max_change", "method", "reason"}
    independence: dict[str, Any] | None = None
    # the model output and targets: {"min", "max", "row_sum", "prob_like", "log_prob_like",
    #   "target_min", "target_max", "target_signed", "head_activation"}
    output: dict[str, Any] = field(default_factory=dict)
    # the input batch: {"dtype", "float", "mean", "std", "min", "max", "nan", "synthetic", "integer_valued"}
    inputs: dict[str, Any] = field(default_factory=dict)
    # captum: {"method", "target", "coverage", "border_share", "heatmap", "gradcam", "status", "reason"}
    attribution: dict[str, Any] | None = None
    error: str | None = None  # the run stopped: why
    error_step: int | None = None
    seconds: float | None = None

    @property
    def initial_loss(self) -> float | None:
        return self.loss[0] if self.loss else None

    @property
    def final_loss(self) -> float | None:
        finite = [x for x in self.loss[-3:] if x is not None]
        return min(finite) if finite else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["initial_loss"] = self.initial_loss
        d["final_loss"] = self.final_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        def hist(h: Any) -> Histogram | None:
            return None if h is None else Histogram(**h)

        d = {k: v for k, v in d.items() if k not in ("initial_loss", "final_loss")}
        layers = [LayerProbe(**{**x, "hist_first": hist(x.get("hist_first")), "hist_last": hist(x.get("hist_last"))})
                  for x in d.pop("layers", [])]
        params = [ParamProbe(**{**x, "grad_hist_first": hist(x.get("grad_hist_first")),
                                "grad_hist_last": hist(x.get("grad_hist_last"))}) for x in d.pop("params", [])]
        return cls(layers=layers, params=params, **d)
