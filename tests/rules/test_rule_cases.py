"""Every rule ships a bad model that fires exactly that rule and a good twin that fires nothing.

Case files live in tests/fixtures/rule_cases/<code>.py with `bad()` and `good()` returning
dict(model=..., input_shape=[...], dtype="float32", loss=None, dataset_size=None,
config={family: {option: value}}). A registered rule without a case fails the suite.

Each rule's docstring examples are held to the same standard (see the bottom of this file): the
`## Example` model, run like its case, must fire the rule and the `## Use instead` model must not,
so the documentation cannot drift from what the rule does.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dldoctor
from dldoctor.collect.facts import build_facts
from dldoctor.report.facts import normalise_loss
from dldoctor.rules.options import FAMILY_OPTIONS
from dldoctor.rules.registry import all_rules

CASE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "rule_cases"
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
    return importlib.import_module(f"tests.fixtures.rule_cases.{code.lower()}")


@pytest.mark.parametrize("code", [r.code for r in RULES] or ["none"])
def test_rule_has_case(code):
    if code == "none":
        pytest.skip("no rules registered")
    assert (CASE_DIR / f"{code.lower()}.py").exists(), f"rule {code} ships no tests/fixtures/rule_cases/{code.lower()}.py"


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


# -- the docstrings' examples and the cases stay in step ---------------------------------------------
#
# A rule's `## Example` is a standalone program that builds an nn.Module (from torch, nn and F only,
# writing no file), unless ILLUSTRATIVE says why not. The module goes through the same pipeline as
# the cases, with the bad case's settings (its input shape when the module accepts it, else one
# derived from the first layer; the loss the snippet names, else the case's), and must fire the rule;
# a `## Use instead` that is such a program must not fire it. For an ILLUSTRATIVE Example, the layer
# classes its python block names must all be in the bad case's model, and the keys its TOML block
# sets must be the ones the bad case configures. (A `## Use instead` fragment is not compared with
# the good case: the twin may show another of the fixes.)

PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
ILLUSTRATIVE = {
    **{f"BUD{i:03d}": "a budget in pyproject.toml, not a model" for i in range(1, 11)},
    **{f"TRN{i:03d}": "a training-dynamics finding needs a probe run (seconds each); or a fragment" for i in range(1, 19)},
    "ARC016": "the forward of a segmentation net, without its layers",
    "ARC019": "a model whose forward pass fails on the input its comment names",
    "EFF001": "saves the model to a file",
    "EFF003": "a torchvision model",
    "PRF001": "a call, not a model; the finding needs a profile run",
    "PRF002": "a command line; the finding needs a profile run",
    "PRF003": "a loop over requests; the finding needs a profile run",
    "PRF004": "the finding needs a profile run (the case gives measurements)",
    "TFM004": "a class whose forward is the point, without its layers",
    "TFM006": "a block's forward, without its layers",
    "TFM007": "a call on an input of the wrong layout",
    "TFM008": "attention over 8192 tokens: too heavy to run in a test",
    "TRF002": "a pretrained torchvision model",
    "TRF003": "a pretrained torchvision model and --dataset-size",
    "TRF005": "a pretrained torchvision model and --dataset-size",
}
_SIZE = re.compile(r"(\d+)×(\d+)")


def _no_files(*args, **kwargs):
    raise RuntimeError("a docstring example may not write files")


def doc_module(code: str) -> nn.Module | None:
    """The module a docstring's python block builds (`model`, else the last expression, else the last
    module assigned), or None when the block is not a standalone program."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return None
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    ns: dict = {"torch": torch, "nn": nn, "F": F}
    torch.manual_seed(0)
    with mock.patch("torch.save", _no_files):
        try:
            exec(compile(tree, "<docstring>", "exec"), ns)  # noqa: S102 - the catalog's own docstrings
            value = eval(compile(ast.Expression(last.value), "<docstring>", "eval"), ns) if last else None  # noqa: S307
        except Exception:  # noqa: BLE001 - a fragment (names it does not define), not a program
            return None
    module = next((m for m in (ns.get("model"), value, *reversed(list(ns.values()))) if isinstance(m, nn.Module)), None)
    if isinstance(module, nn.MultiheadAttention):  # self-attention over one input, as the cases call it
        module = _SelfAttention(module)
    return module


class _SelfAttention(nn.Module):
    def __init__(self, attn: nn.MultiheadAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x, x, x)[0]


def _input_shapes(code: str, module: nn.Module, case: dict):
    """Candidate (shape, dtype) for the docstring's module: the case's, then one from its first layer."""
    shapes = case.get("input_shapes") or ([case["input_shape"]] if case.get("input_shape") else [])
    if len(shapes) == 1:
        yield shapes[0], case.get("dtype") or "float32"
    dtype = str(next(module.parameters()).dtype).replace("torch.", "") if any(True for _ in module.parameters()) else "float32"
    size = [int(x) for x in _SIZE.search(code).groups()] if _SIZE.search(code) else [32, 32]
    for m in module.modules():
        if isinstance(m, nn.Linear):
            yield [4, m.in_features], dtype
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nd = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(m)]
            yield [1, m.in_channels, *(size * 2)[:nd]], dtype
        elif isinstance(m, nn.Embedding):
            yield [2, 16], "int64"
        elif isinstance(m, nn.MultiheadAttention):
            yield [1, 16, m.embed_dim], dtype
        else:
            continue
        return


def _accepts(module: nn.Module, shape: list[int], dtype: str) -> bool:
    x = torch.zeros(shape, dtype=getattr(torch, dtype)) if dtype != "int64" else torch.zeros(shape, dtype=torch.long)
    try:
        with torch.no_grad():
            module(x)
        return True
    except Exception:  # noqa: BLE001
        return False


def _doc_loss(code: str) -> str | None:
    for m in re.finditer(r"nn\.(\w+Loss)\(|F\.(\w+)\(", code):
        try:
            return normalise_loss(m.group(1) or m.group(2))
        except Exception:  # noqa: BLE001 - not a loss (F.scaled_dot_product_attention, ...)
            continue
    return None


def _doc_case(code: str, case: dict) -> dict | None:
    module = doc_module(code)
    if module is None:
        return None
    for shape, dtype in _input_shapes(code, module, case):
        if _accepts(module, shape, dtype):
            out = {k: v for k, v in case.items() if k not in ("input_shapes", "model")}
            return dict(out, model=module, input_shape=shape, dtype=dtype, loss=_doc_loss(code) or case.get("loss"))
    raise AssertionError(f"no input shape found for the docstring's model:\n{code}")


def _nn_classes(code: str) -> set[str]:
    """The layer classes (nn.X, losses aside) a python block builds."""
    return {n for n in re.findall(r"\bnn\.([A-Z]\w*)\(", code) if isinstance(getattr(nn, n, None), type)
            and issubclass(getattr(nn, n), nn.Module) and not n.endswith("Loss")}


def _check_names(r, section: str, case: dict) -> None:
    """A fragment names only layers the case uses, and a TOML block only the keys the case configures."""
    text = r.sections[section]
    model = case.get("model")
    if isinstance(model, nn.Module) and "profile" not in case:  # a profile case's model only stands in
        have = {type(m).__name__ for m in model.modules()}
        for code in PYTHON_BLOCK.findall(text):
            missing = _nn_classes(code) - have
            assert not missing, f"{r.code} `## {section}` names {sorted(missing)}, which its case's model lacks"
    for block in TOML_BLOCK.findall(text):
        keys = {line.split("=")[0].strip().replace("-", "_") for line in block.splitlines()
                if "=" in line and not line.lstrip().startswith(("#", "["))}
        configured = set(case.get("config", {}).get(r.family, {}))
        if case.get("baseline") is not None:  # the case hands over the report `baseline-report` would load
            configured.add("baseline_report")
        assert keys <= configured, f"{r.code} `## {section}` sets {sorted(keys - configured)}, which its case does not"


@pytest.mark.parametrize("code", [r.code for r in RULES if (CASE_DIR / f"{r.code.lower()}.py").exists()])
def test_docstring_examples_match_the_case(code):
    r = next(x for x in RULES if x.code == code)
    cases = _case_module(code)
    for section, kind in (("Example", "bad"), ("Use instead", "good")):
        case = getattr(cases, kind)()
        blocks = PYTHON_BLOCK.findall(r.sections[section])
        doc = _doc_case(blocks[0], case) if blocks and code not in ILLUSTRATIVE else None
        if doc is None:
            if section == "Example":
                assert code in ILLUSTRATIVE, f"{code}'s `## Example` is not a runnable model: list it in ILLUSTRATIVE"
                _check_names(r, section, case)
            continue
        fired = fire(doc, [r])
        if kind == "bad":
            assert code in fired, f"{code}'s `## Example` does not fire it (input {doc['input_shape']})"
        else:
            assert code not in fired, f"{code}'s `## Use instead` fires it: {fired[code]}"
