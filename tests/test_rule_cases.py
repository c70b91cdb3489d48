"""Every rule ships a bad model that fires exactly that rule and a good twin that fires nothing.

Case files live in tests/rule_cases/<code>.py with `bad()` and `good()` returning
dict(model=..., input_shape=[...], dtype="float32", loss=None, dataset_size=None,
config={family: {option: value}}). A registered rule without a case fails the suite.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch

import dldoctor
from dldoctor.rules.build import build_facts
from dldoctor.rules.options import FAMILY_OPTIONS
from dldoctor.rules.registry import all_rules

CASE_DIR = Path(__file__).parent / "rule_cases"
RULES = all_rules()


def fire(case: dict, rules=RULES) -> dict[str, list[str]]:
    """Run the whole pipeline on one case; return {code: [messages]} of the rules that fired."""
    torch.manual_seed(0)
    model = case["model"]
    shapes = case.get("input_shapes") or ([case["input_shape"]] if "input_shape" in case else None)
    if shapes and "probe" in case:
        shapes = [[1, *s[1:]] for s in shapes]
    rep = dldoctor.inspect(model, input_shapes=shapes, dtype=case.get("dtype"))
    if "probe" in case:  # training-dynamics rules: run the probe as `dldoctor probe` would
        from dldoctor.collect.probe import run_probe

        kw = dict(case["probe"])
        rep.probe = run_probe(model, data=kw.pop("data", None), **kw)
    if "profile" in case:  # measured-speed rules judge given measurements (the profiler is tested on its own)
        rep.profile = case["profile"]
    facts = build_facts(rep, model, loss=case.get("loss"), dataset_size=case.get("dataset_size"),
                        baseline=case.get("baseline"))
    overrides = case.get("config", {})
    fired: dict[str, list[str]] = {}
    for r in rules:
        if not all(facts.has(n) for n in r.needs):
            continue
        opts = dataclasses.replace(FAMILY_OPTIONS[r.family](), **overrides.get(r.family, {}))
        msgs = [h.message for h in r.run(facts, opts)]
        if msgs:
            fired[r.code] = msgs
    return fired


def _case_module(code: str):
    return importlib.import_module(f"tests.rule_cases.{code.lower()}")


@pytest.mark.parametrize("code", [r.code for r in RULES] or ["none"])
def test_rule_has_case(code):
    if code == "none":
        pytest.skip("no rules registered")
    assert (CASE_DIR / f"{code.lower()}.py").exists(), f"rule {code} ships no tests/rule_cases/{code.lower()}.py"


@pytest.mark.parametrize("code", [r.code for r in RULES if (CASE_DIR / f"{r.code.lower()}.py").exists()])
def test_bad_fires_exactly_its_rule(code):
    case = _case_module(code).bad()
    fired = fire(case)
    # a probe case may set off the consequences its fault causes (a dead layer also stops the loss falling)
    assert code in fired and set(fired) - {code} <= set(case.get("also", ())), fired


@pytest.mark.parametrize("code", [r.code for r in RULES if (CASE_DIR / f"{r.code.lower()}.py").exists()])
def test_good_twin_fires_nothing(code):
    fired = fire(_case_module(code).good())
    assert fired == {}, fired


def test_case_files_name_real_rules():
    codes = {r.code.lower() for r in RULES}
    stray = [p.stem for p in CASE_DIR.glob("*.py") if p.stem != "__init__" and p.stem not in codes]
    assert not stray, f"case files without a rule: {stray}"
