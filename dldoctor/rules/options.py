"""Typed options per rule family: `[tool.dldoctor.<family>]` in pyproject.toml (kebab-case keys).

Each field is documented in the `## Options` section of the rules that read it as
`family.kebab-name`; a test fails when a rule names a field that does not exist.
Rule authors add the fields their rules need here, with a default and a comment.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchOptions:  # [tool.dldoctor.arch]
    max_dropout: float = 0.5  # dropout probability above which training signal is mostly thrown away


@dataclass(frozen=True)
class OutputOptions:  # [tool.dldoctor.output]
    pass


@dataclass(frozen=True)
class InitOptions:  # [tool.dldoctor.init]
    pass


@dataclass(frozen=True)
class EfficiencyOptions:  # [tool.dldoctor.efficiency]
    pass


@dataclass(frozen=True)
class TransferOptions:  # [tool.dldoctor.transfer]
    pass


@dataclass(frozen=True)
class TransformerOptions:  # [tool.dldoctor.transformer]
    pass


@dataclass(frozen=True)
class BudgetOptions:  # [tool.dldoctor.budget]; None = no budget
    max_params: int | None = None
    max_macs: int | None = None
    max_size_bytes: int | None = None
    max_inference_memory_bytes: int | None = None
    max_training_memory_bytes: int | None = None
    # Relative budgets: growth allowed against the saved report at baseline_report, as a
    # fraction (0.05 = may grow 5%). The engine loads that report into Facts.baseline.
    baseline_report: str | None = None  # path to a JSON report from `dldoctor inspect -f json`
    max_params_growth: float | None = None
    max_macs_growth: float | None = None
    max_size_growth: float | None = None
    max_memory_growth: float | None = None  # inference and training peaks alike


FAMILY_OPTIONS: dict[str, type] = {
    "arch": ArchOptions,
    "output": OutputOptions,
    "init": InitOptions,
    "efficiency": EfficiencyOptions,
    "transfer": TransferOptions,
    "transformer": TransformerOptions,
    "budget": BudgetOptions,
}

# Code prefix of each family.
FAMILY_PREFIX: dict[str, str] = {
    "arch": "ARC",
    "output": "OUT",
    "init": "INI",
    "efficiency": "EFF",
    "transfer": "TRF",
    "transformer": "TFM",
    "budget": "BUD",
}
