"""Budget rules on hand-built facts: silent without a budget, errors over it, honest about partial and missing figures."""
from __future__ import annotations

from dataclasses import replace

import pytest

from dldoctor.rules import seeds
from dldoctor.report.facts import FACT_NAMES, Facts
from dldoctor.rules.options import BudgetOptions
from dldoctor.rules.registry import REGISTRY, all_rules
from dldoctor.report.types import (
    COMPLETE,
    PARTIAL,
    UNAVAILABLE,
    FlopStats,
    InputInfo,
    MemoryStats,
    ModelInfo,
    ParamStats,
    Report,
    Severity,
)


all_rules()  # REGISTRY fills when the catalog loads: this file must not rely on another having loaded it

def make(params=1000, buffers_bytes=0, macs=5000, flops_status=COMPLETE, inf_mem=10_000, train_mem=40_000, shape=(1, 16)):
    return Report(
        model=ModelInfo(path="m.pt", format="torch-module"),
        inputs=[InputInfo(list(shape), "float32")],
        params=ParamStats(total=params, trainable=params, bytes=4 * params, buffer_bytes=buffers_bytes),
        flops=FlopStats(
            status=flops_status if macs is not None else UNAVAILABLE,
            macs=macs, flops=None if macs is None else 2 * macs,
            reason={COMPLETE: None, PARTIAL: "ops without a MAC formula were not counted: my_op",
                    UNAVAILABLE: "needs the architecture: pass --arch pkg.module:factory"}[flops_status if macs is not None else UNAVAILABLE],
        ),
        memory=MemoryStats(status=COMPLETE if inf_mem and train_mem else UNAVAILABLE, params_bytes=4 * params,
                           inference_peak_bytes=inf_mem, training_peak_bytes=train_mem,
                           reason=None if inf_mem and train_mem else "no training pass"),
    )


def hits(code: str, report: Report, baseline: Report | None = None, **opts):
    r = REGISTRY[code]
    return list(r.run(Facts(report=report, baseline=baseline), replace(BudgetOptions(), **opts)))


ABSOLUTE = [
    ("BUD001", "max_params", 1000),  # value of make(): 1000 params
    ("BUD002", "max_macs", 5000),
    ("BUD003", "max_size_bytes", 4000),  # 4 bytes per fp32 param
    ("BUD004", "max_inference_memory_bytes", 10_000),
    ("BUD005", "max_training_memory_bytes", 40_000),
]


def test_baseline_is_a_fact():
    assert "baseline" in FACT_NAMES
    assert Facts(report=make()).baseline is None


@pytest.mark.parametrize("code,opt,value", ABSOLUTE)
def test_absolute_budget(code, opt, value):
    rep = make()
    assert hits(code, rep) == []  # no budget: silent
    assert hits(code, rep, **{opt: value}) == []  # exactly at the budget passes
    over = hits(code, rep, **{opt: value // 2})
    assert len(over) == 1 and over[0].severity is None  # the rule's default: error
    assert REGISTRY[code].severity == Severity.ERROR
    assert over[0].evidence == {"value": value, "budget": value // 2, "ratio": 2.0, "status": COMPLETE}
    assert "over the budget" in over[0].message and "(2.00x)" in over[0].message


def test_size_counts_buffers():
    rep = make(params=1000, buffers_bytes=100)
    (h,) = hits("BUD003", rep, max_size_bytes=4050)
    assert h.evidence["value"] == 4100 and h.transform == "onnx-int8-dynamic"


def test_partial_macs_over_budget_still_fires():
    rep = make(macs=5000, flops_status=PARTIAL)
    (h,) = hits("BUD002", rep, max_macs=4000)
    assert h.severity is None and h.evidence["status"] == PARTIAL
    assert "at least" in h.message and "lower bound" in h.message and "my_op" in h.message


def test_partial_macs_under_budget_is_not_passed_silently():
    rep = make(macs=5000, flops_status=PARTIAL)
    (h,) = hits("BUD002", rep, max_macs=8000)
    assert h.severity == Severity.INFO
    assert "cannot be confirmed" in h.message and "my_op" in h.message


def test_unavailable_macs_says_the_budget_was_not_checked():
    rep = make(macs=None)
    (h,) = hits("BUD002", rep, max_macs=8000)
    assert h.severity == Severity.INFO and h.evidence["value"] is None
    assert "could not be checked" in h.message and "--arch" in h.message


def test_unavailable_memory():
    rep = make(inf_mem=None, train_mem=None)
    (h,) = hits("BUD005", rep, max_training_memory_bytes=1)
    assert h.severity == Severity.INFO and "could not be checked" in h.message and "no training pass" in h.message
    (h,) = hits("BUD004", rep, max_inference_memory_bytes=1)
    assert h.severity == Severity.INFO


def test_zero_budget():
    (h,) = hits("BUD001", make(), max_params=0)
    assert h.evidence["ratio"] is None and "over the budget" in h.message


# -- relative budgets -----------------------------------------------------------------


RELATIVE = [
    ("BUD006", "max_params_growth", dict(params=1000), dict(params=1100)),
    ("BUD007", "max_macs_growth", dict(macs=5000), dict(macs=5500)),
    ("BUD008", "max_size_growth", dict(params=1000), dict(params=1000, buffers_bytes=400)),
    ("BUD009", "max_memory_growth", dict(inf_mem=10_000), dict(inf_mem=11_000)),
]


@pytest.mark.parametrize("code,opt,old,new", RELATIVE)
def test_relative_budget(code, opt, old, new):
    base, rep = make(**old), make(**new)
    assert hits(code, rep, base) == []  # no growth budget: silent, baseline or not
    assert hits(code, rep, base, **{opt: 0.10}) == []  # +10% within +10%
    assert hits(code, rep, base, **{opt: 0.20}) == []
    (h,) = hits(code, rep, base, **{opt: 0.05})
    assert h.severity is None
    assert h.evidence["growth"] == pytest.approx(0.10) and h.evidence["max_growth"] == 0.05
    assert h.evidence["ratio"] == pytest.approx(1.10)
    assert "+10.0%" in h.message and "+5.0%" in h.message
    assert hits(code, base, base, **{opt: 0.0}) == []  # unchanged passes a zero-growth budget


def test_relative_without_baseline_says_so():
    (h,) = hits("BUD007", make(), None, max_macs_growth=0.05)
    assert h.severity == Severity.INFO and "budget.baseline-report" in h.message
    facts = Facts(report=make(), missing={"baseline": "baseline.json: no report for m.pt"})
    (h,) = list(REGISTRY["BUD007"].run(facts, BudgetOptions(max_macs_growth=0.05)))
    assert "no report for m.pt" in h.message


def test_relative_partial_new_over_fires():
    base, rep = make(macs=5000), make(macs=6000, flops_status=PARTIAL)
    (h,) = hits("BUD007", rep, base, max_macs_growth=0.05)
    assert h.severity is None and "at least" in h.message


def test_relative_partial_new_within_is_info():
    base, rep = make(macs=5000), make(macs=5100, flops_status=PARTIAL)
    (h,) = hits("BUD007", rep, base, max_macs_growth=0.05)
    assert h.severity == Severity.INFO and "cannot be confirmed" in h.message


def test_relative_partial_baseline_over_is_info():
    base, rep = make(macs=5000, flops_status=PARTIAL), make(macs=6000)
    (h,) = hits("BUD007", rep, base, max_macs_growth=0.05)
    assert h.severity == Severity.INFO and "baseline's count is a lower bound" in h.message
    assert hits("BUD007", make(macs=5100), base, max_macs_growth=0.05) == []  # real growth is smaller still


def test_relative_unavailable_side():
    (h,) = hits("BUD007", make(macs=None), make(), max_macs_growth=0.05)
    assert h.severity == Severity.INFO and "unavailable for this model" in h.message
    (h,) = hits("BUD007", make(), make(macs=None), max_macs_growth=0.05)
    assert "unavailable for the baseline" in h.message


def test_memory_growth_one_hit_per_peak():
    base, rep = make(inf_mem=10_000, train_mem=40_000), make(inf_mem=20_000, train_mem=80_000)
    found = hits("BUD009", rep, base, max_memory_growth=0.05)
    assert len(found) == 2
    assert {h.evidence["baseline"] for h in found} == {10_000, 40_000}


def test_relative_notes_different_inputs():
    base, rep = make(macs=5000), make(macs=20_000, shape=(4, 16))
    (h,) = hits("BUD007", rep, base, max_macs_growth=0.05)
    assert "4x16" in h.message and "1x16" in h.message


def test_growth_from_zero():
    (h,) = hits("BUD007", make(macs=10), make(macs=0), max_macs_growth=0.05)
    assert h.evidence["growth"] is None and "from 0" in h.message


def test_options_sections_name_real_fields():
    import dataclasses
    import re

    fields = {f.name.replace("_", "-") for f in dataclasses.fields(BudgetOptions)}
    for r in all_rules():
        if r.family != "budget":
            continue
        named = re.findall(r"`budget\.([a-z0-9-]+)`", r.sections["Options"])
        assert named and set(named) <= fields, (r.code, named)


def test_figures_and_diff_import_no_torch():
    import subprocess
    import sys

    code = "import sys, dldoctor.report.figures, dldoctor.api.diff; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sources_are_seeds():
    for r in all_rules():
        if r.family == "budget":
            assert set(r.sources) <= {seeds.ARCHITECTURE, seeds.HANDBOOK}
