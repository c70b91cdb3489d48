"""The report: plain, frozen-ish dataclasses that serialise to the JSON contract.

Only data lives here (no torch import), so renderers, rules and the CLI can use
it without paying for torch. `docs/report-schema.md` documents every field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dldoctor.report.compress_types import CompressResult
from dldoctor.report.llm_types import LLMPlan
from dldoctor.report.probe_types import ProbeResult
from dldoctor.report.profile_types import ProfileResult

SCHEMA_VERSION = "2.2"

COMPLETE = "complete"
PARTIAL = "partial"
UNAVAILABLE = "unavailable"


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass
class ModelInfo:
    path: str
    format: str
    sha256: str | None = None
    name: str | None = None


@dataclass
class InputInfo:
    shape: list[int]
    dtype: str
    assumed: bool = False
    name: str | None = None  # a keyword input (model(..., name=tensor)); None for a positional one


@dataclass
class ParamStats:
    total: int = 0
    trainable: int = 0
    frozen: int = 0
    buffers: int = 0
    bytes: int = 0
    buffer_bytes: int = 0
    by_dtype: dict[str, int] = field(default_factory=dict)
    shared: int = 0  # parameters that appear under more than one name, counted once in total


@dataclass
class FlopStats:
    status: str = UNAVAILABLE
    macs: int | None = None
    flops: int | None = None
    training_flops: int | None = None  # forward + backward of one step
    training_status: str = UNAVAILABLE
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    reason: str | None = None


@dataclass
class MemoryStats:
    status: str = UNAVAILABLE
    params_bytes: int = 0
    buffers_bytes: int = 0
    inference_peak_bytes: int | None = None
    training_peak_bytes: int | None = None
    training_breakdown: dict[str, int] = field(default_factory=dict)
    optimizer: str = "adam"
    batch_size: int | None = None
    per_batch: list[dict[str, Any]] = field(default_factory=list)  # {batch_size, inference_peak_bytes, training_peak_bytes, status}
    reason: str | None = None


@dataclass
class ReceptiveField:
    status: str = UNAVAILABLE
    size: list[float] | None = None  # per spatial dim, in input pixels
    stride: list[float] | None = None
    padding: list[float] | None = None
    global_: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["global"] = d.pop("global_")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReceptiveField | None:
        if d is None:
            return None
        d = dict(d)
        d["global_"] = d.pop("global", False)
        return cls(**d)


@dataclass
class LayerInfo:
    path: str
    type: str
    output_shape: list[list[int]] | None = None
    params: int = 0
    macs: int = 0
    share: float = 0.0
    depth: int = 0
    receptive_field: ReceptiveField | None = None
    calls: int = 1


@dataclass
class Diagnostic:
    level: str  # "error" | "warning" | "info"
    message: str
    where: str | None = None


@dataclass
class Finding:
    code: str
    name: str
    severity: str
    message: str
    location: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str | None = None
    transform: str | None = None  # the `dldoctor compress` transform that applies the fix
    source: str | None = None  # seed file(s) the rule comes from


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    nbytes: int


@dataclass
class Report:
    model: ModelInfo
    inputs: list[InputInfo] = field(default_factory=list)
    params: ParamStats = field(default_factory=ParamStats)
    flops: FlopStats = field(default_factory=FlopStats)
    memory: MemoryStats = field(default_factory=MemoryStats)
    receptive_field: ReceptiveField = field(default_factory=ReceptiveField)
    layers: list[LayerInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    tensors: list[TensorInfo] | None = None  # weight files read without an architecture
    onnx: dict[str, Any] | None = None  # opset, op histogram, graph inputs/outputs
    device: str = "cpu"
    probe: ProbeResult | None = None  # from `dldoctor probe` / `dldoctor.watch`
    profile: ProfileResult | None = None  # from `dldoctor profile`
    compress: CompressResult | None = None  # from `dldoctor compress`
    llm_plan: LLMPlan | None = None  # decoders (causal LMs) with a config: the memory plan
    schema_version: str = SCHEMA_VERSION

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            if f.name == "schema_version":
                continue
            d[f.name] = _to_plain(getattr(self, f.name))
        # an input's `name` is there for keyword inputs only (positional ones have none)
        d["inputs"] = [{k: v for k, v in i.items() if k != "name" or v is not None} for i in d["inputs"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        rf = ReceptiveField.from_dict
        return cls(
            schema_version=d.get("schema_version", SCHEMA_VERSION),
            model=ModelInfo(**d["model"]),
            inputs=[InputInfo(**i) for i in d.get("inputs", [])],
            params=ParamStats(**d.get("params", {})),
            flops=FlopStats(**d.get("flops", {})),
            memory=MemoryStats(**d.get("memory", {})),
            receptive_field=rf(d.get("receptive_field")) or ReceptiveField(),
            layers=[LayerInfo(**{**lay, "receptive_field": rf(lay.get("receptive_field"))}) for lay in d.get("layers", [])],
            findings=[Finding(**f) for f in d.get("findings", [])],
            diagnostics=[Diagnostic(**x) for x in d.get("diagnostics", [])],
            tensors=None if d.get("tensors") is None else [TensorInfo(**t) for t in d["tensors"]],
            onnx=d.get("onnx"),
            device=d.get("device", "cpu"),
            probe=_probe_from(d.get("probe")),
            profile=_profile_from(d.get("profile")),
            compress=_compress_from(d.get("compress")),
            llm_plan=LLMPlan.from_dict(d.get("llm_plan")),
        )

    def diag(self, level: str, message: str, where: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(level, message, where))


def _probe_from(d: Any) -> ProbeResult | None:
    return None if d is None else ProbeResult.from_dict(d)


def _profile_from(d: Any) -> ProfileResult | None:
    return None if d is None else ProfileResult.from_dict(d)


def _compress_from(d: Any) -> CompressResult | None:
    return None if d is None else CompressResult.from_dict(d)


def _to_plain(x: Any) -> Any:
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _to_plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Enum):
        return x.value
    if isinstance(x, dict):
        return {str(k): _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x
