"""`dldoctor.check()`: inspect a model, collect the facts, run the selected rules, return the Report.

The CLI's `check` and `inspect` commands are thin layers over `check_model`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dldoctor.api.judge import judge
from dldoctor.errors import ConfigError
from dldoctor.report.types import Finding, Report
from dldoctor.rules.config import Config
from dldoctor.rules.engine import RuleResult


@dataclass
class CheckResult:
    report: Report  # with `findings` filled and skipped/failed rules in `diagnostics`
    rules: RuleResult

    @property
    def findings(self) -> list[Finding]:
        return self.report.findings


def needs_training_pass(config: Config) -> bool:
    """The training-step pass costs a second trace; run it only when a budget reads its figures."""
    b = config.budget
    return any(getattr(b, n, None) is not None for n in ("max_training_memory_bytes", "max_memory_growth"))


def check_model(
    model_or_path: Any,
    config: Config | None = None,
    *,
    inputs: Any = None,
    input_shapes: list[list[int]] | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    loss: str | None = None,
    dataset_size: int | None = None,
    load_options: Any = None,
    training: bool | None = None,
    depth: int | None = None,
    optimizer: str = "adam",
    baseline_report: Report | None = None,
    batch_sizes: list[int] | None = None,
    profile: bool = False,
    plan: Any = None,
) -> CheckResult:
    """Inspect one model and judge it. Load errors raise (DLDoctorError); rule failures do not."""
    from dldoctor.api.inspect import inspect_loaded

    config = config or Config()
    if training is None:
        training = needs_training_pass(config)
    report, loaded = inspect_loaded(
        model_or_path, inputs, input_shapes=input_shapes, dtype=dtype, device=device, optimizer=optimizer,
        training=training, load_options=load_options, loss=loss, batch_sizes=batch_sizes, plan=plan,
    )
    if profile and (loaded.module is not None or loaded.onnx_model is not None):
        # the latency budget's measurement: its batch size on its device, no breakdown, no what-ifs
        from dldoctor.api.profile import measure_loaded

        b = config.budget
        report.profile = measure_loaded(report, loaded, device=b.latency_device, batch_sizes=[b.latency_batch_size],
                                        whatifs=False, breakdown=False)
    if baseline_report is None:
        baseline_report = load_baseline_report(config, report.model.path)
    result = judge(report, loaded.module, config, loss, dataset_size=dataset_size, baseline=baseline_report)
    if depth is not None:
        report.layers = [lay for lay in report.layers if lay.depth <= depth]
    return CheckResult(report, result)



def load_baseline_report(config: Config, model_path: str | None) -> Report | None:
    """The saved report `budget.baseline-report` points to (relative to the config file), for relative budgets.

    A file with several reports gives the one whose model path or file name matches.
    """
    ref = getattr(config.budget, "baseline_report", None)
    if not ref:
        return None
    path = Path(ref)
    if not path.is_absolute() and config.root:
        path = Path(config.root) / path
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"budget.baseline-report: cannot read {path} ({e.strerror or e})") from None
    except ValueError as e:
        raise ConfigError(f"budget.baseline-report: {path} is not JSON ({e})") from None
    try:
        if "reports" in doc:
            docs = doc["reports"]
            if len(docs) == 1:
                return Report.from_dict(docs[0])
            want = os.path.basename(model_path or "")
            for d in docs:
                p = d.get("model", {}).get("path", "")
                if p == model_path or (want and os.path.basename(p) == want):
                    return Report.from_dict(d)
            return None
        return Report.from_dict(doc)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"budget.baseline-report: {path} is not a dldoctor report ({e})") from None
