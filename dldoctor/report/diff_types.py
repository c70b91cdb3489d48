"""What `dldoctor diff` returns: plain data (no torch), shared by api/diff.py and the diff renderers.

`Diff.to_dict()` is the JSON of `dldoctor diff -f json` (kind "dldoctor-diff").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dldoctor.report.types import SCHEMA_VERSION, Finding

DIFF_KIND = "dldoctor-diff"


@dataclass
class MetricDelta:
    key: str
    label: str
    unit: str
    old: int | None
    new: int | None
    delta: int | None
    change_pct: float | None  # (new - old) / old * 100; None when old is 0 or either side is unavailable
    old_status: str
    new_status: str


@dataclass
class LayerChange:
    path: str
    change: str  # "added" | "removed" | "changed"
    type_old: str | None = None
    type_new: str | None = None
    params_old: int | None = None
    params_new: int | None = None
    macs_old: int | None = None
    macs_new: int | None = None
    output_shape_old: list[list[int]] | None = None
    output_shape_new: list[list[int]] | None = None
    fields: list[str] = field(default_factory=list)  # what changed: type, params, macs, output_shape


@dataclass
class BudgetCheck:
    budget: str  # params | macs | size | memory | new-findings
    limit: float | None  # the allowed growth as a fraction; None for new-findings
    figure: str | None
    verdict: str  # ok | exceeded | unconfirmed | unavailable
    message: str


@dataclass
class Diff:
    old: dict[str, Any]  # model info and inputs of each side
    new: dict[str, Any]
    metrics: list[MetricDelta]
    receptive_field: dict[str, Any]
    layers: list[LayerChange]
    findings_compared: bool
    new_findings: list[Finding]
    fixed_findings: list[Finding]
    notes: list[str] = field(default_factory=list)
    budgets: list[BudgetCheck] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION

    @property
    def violations(self) -> list[BudgetCheck]:
        return [b for b in self.budgets if b.verdict == "exceeded"]

    @property
    def unchecked(self) -> list[BudgetCheck]:
        return [b for b in self.budgets if b.verdict in ("unconfirmed", "unavailable")]

    def metric(self, key: str) -> MetricDelta:
        return next(m for m in self.metrics if m.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": DIFF_KIND,
            "old": self.old,
            "new": self.new,
            "metrics": [asdict(m) for m in self.metrics],
            "receptive_field": self.receptive_field,
            "layers": [asdict(c) for c in self.layers],
            "findings": {
                "compared": self.findings_compared,
                "new": [asdict(f) for f in self.new_findings],
                "fixed": [asdict(f) for f in self.fixed_findings],
            },
            "notes": list(self.notes),
            "budgets": [asdict(b) for b in self.budgets],
            "passed": not self.violations,
        }
