"""The transform catalog (dldoctor/transforms/catalog.py), the twin of the rule registry.

One name per transform: every `transform` a rule's finding can name is a name `dldoctor compress -t` accepts
(read from the rule catalog's source with ast, and collected from every rule's bad case run through the
pipeline of tests/rules/test_rule_cases.py); every `fixes=` code is a registered rule; names are kebab-case and
unique; the catalog's order is the order a run makes the variants in; `--from-findings` selects what the old
translation map (finding name -> variants) selected, in the same order.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.errors import InputSpecError
from dldoctor.rules.registry import all_rules
from dldoctor.transforms import catalog
from dldoctor.transforms.catalog import CATALOG, TransformDefinitionError, transform
from tests.rules.test_rule_cases import _case_module, fire

RULE_CATALOG = Path(catalog.__file__).parent.parent / "rules" / "catalog"
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# the order `dldoctor compress` made its variants in before the catalog existed (TORCH_TRANSFORMS + ONNX_TRANSFORMS)
HISTORICAL_ORDER = ("fold-conv-bn", "torch-fp16", "torch-bf16", "torch-int8-dynamic", "prune-50",
                    "onnx-optimized", "onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16")


# -- what the rule catalog's source can name ------------------------------------------------------------------


def _module_dicts(tree: ast.Module) -> dict[str, ast.Dict]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node.value
    return out


def _values(expr: ast.expr, dicts: dict[str, ast.Dict], where: str) -> set[str]:
    """The transform names an expression passed as `transform` can evaluate to."""
    if isinstance(expr, ast.Constant) and (expr.value is None or isinstance(expr.value, str)):
        return set() if expr.value is None else {expr.value}
    if isinstance(expr, ast.IfExp):
        return _values(expr.body, dicts, where) | _values(expr.orelse, dicts, where)
    table = None  # NAME.get(key) or NAME[key] on a module-level dict literal
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get":
        table = expr.func.value
    elif isinstance(expr, ast.Subscript):
        table = expr.value
    if isinstance(table, ast.Name) and table.id in dicts:
        return set().union(*(_values(v, dicts, where) for v in dicts[table.id].values))
    raise AssertionError(f"{where}: transform={ast.unparse(expr)} cannot be read statically; use a string "
                         "constant, a conditional of constants, or a module-level dict of them")


def _named_in_source(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    dicts = _module_dicts(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.name}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "transform":
                found |= _values(kw.value, dicts, where)
        func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if func == "Hit" and len(node.args) >= 5:  # Hit(message, location, evidence, fix, transform, ...)
            found |= _values(node.args[4], dicts, where)
    return found


def source_names() -> set[str]:
    return set().union(*(_named_in_source(p) for p in sorted(RULE_CATALOG.glob("*.py"))))


def test_the_scan_reads_every_form_the_rules_use():
    names = source_names()
    # a constant (EFF004), a conditional (ARC002) and a module-level dict looked up (BUD003's _TRANSFORM)
    assert {"fold-conv-bn", "onnx-int8-dynamic", "onnx-fp16", "prune-50"} <= names, names
    tree = ast.parse("T = {'a': 'x', 'b': None}\nHit('m', transform=T.get(k))\nHit('m', None, {}, None, 'y' if c else None)")
    assert set().union(*(_values(kw.value, _module_dicts(tree), "t") for n in ast.walk(tree) if isinstance(n, ast.Call)
                         for kw in n.keywords if kw.arg == "transform")) == {"x"}
    with pytest.raises(AssertionError, match="cannot be read statically"):
        _values(ast.parse("pick(x)", mode="eval").body, {}, "t")


def test_every_transform_the_rule_source_names_is_in_the_catalog():
    names = source_names()
    assert names <= set(CATALOG), f"rules name transforms `compress -t` does not know: {names - set(CATALOG)}"


# -- what the rules' bad cases emit -----------------------------------------------------------------------


def _module_names_transforms(rule) -> bool:
    return bool(_named_in_source(Path(inspect.getsourcefile(rule.fn))))


@pytest.mark.parametrize("code", [r.code for r in all_rules()])
def test_every_transform_a_bad_case_emits_is_in_the_catalog(code):
    rule = next(r for r in all_rules() if r.code == code)
    try:
        case = _case_module(code).bad()
    except ModuleNotFoundError:
        pytest.skip(f"{code} has no case (tests/rules/test_rule_cases.py fails for that)")
    if "probe" in case and not _module_names_transforms(rule):
        # a training run takes seconds to minutes; a rule whose module has no transform= (the scan above reads
        # every form a transform can be passed in) cannot emit one, so its case is not run a second time here
        pytest.skip(f"{code}: a probe case, and {Path(inspect.getsourcefile(rule.fn)).name} names no transform")
    emitted: list[str | None] = []

    def recording(facts, opts):
        for h in rule.fn(facts, opts):
            emitted.append(h.transform)
            yield h

    fired = fire(case, rules=[dataclasses.replace(rule, fn=recording)])
    assert code in fired, fired  # the case fires its rule, as in tests/rules/test_rule_cases.py
    named = {t for t in emitted if t is not None}
    assert named <= set(CATALOG), f"{code} emits {named - set(CATALOG)}, which `compress -t` does not accept"
    for t in named:
        assert code in catalog.get(t).fixes, f"{t} does not declare fixes={code!r}, yet {code}'s finding names it"


# -- `dldoctor compress -t NAME` ------------------------------------------------------------------------------


runner = CliRunner()


@pytest.mark.parametrize("name", sorted(source_names()))
def test_compress_accepts_every_name_a_rule_emits(name, tmp_path):
    catalog.check_names([name])  # what the runner checks
    r = runner.invoke(app, ["compress", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o"), "-t", name, "-q"])
    # the name passes the CLI's check and the run goes on to load the (missing) file
    assert r.exit_code == 2 and "unknown transform" not in r.output and "missing.pt" in r.output, r.output


@pytest.mark.parametrize("old", ["fuse-conv-bn", "quantize-dynamic-int8", "fp16", "prune-channels", "quantize"])
def test_a_mistyped_or_retired_name_fails_before_loading(old, tmp_path):
    r = runner.invoke(app, ["compress", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o"), "-t", old, "-q"])
    assert r.exit_code == 2 and f"unknown transform(s): {old}" in r.output and "Traceback" not in r.output, r.output
    assert "fold-conv-bn" in r.output  # the hint lists the names
    with pytest.raises(InputSpecError):
        catalog.check_names([old])


def test_help_lists_the_catalog():
    r = runner.invoke(app, ["compress", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and ", ".join(catalog.names()) in r.output, r.output


# -- the catalog itself ------------------------------------------------------------------------------------


def test_names_are_unique_kebab_case_with_a_backend_and_a_summary():
    names = catalog.names()
    assert len(names) == len(set(names)) and names
    for t in CATALOG.values():
        assert KEBAB.match(t.name), t.name
        assert t.backend in ("torch", "onnx") and t.format == ("pytorch" if t.backend == "torch" else "onnx")
        assert t.summary and callable(t.fn)


def test_every_fixes_code_is_a_registered_rule():
    codes = {r.code for r in all_rules()}
    for t in CATALOG.values():
        assert set(t.fixes) <= codes, f"{t.name}: fixes={sorted(set(t.fixes) - codes)} are not registered rules"


def test_the_decorator_refuses_bad_declarations():
    before = dict(CATALOG)
    for kw, match in [(dict(name="fold-conv-bn", backend="torch"), "declared twice"),
                      (dict(name="Fold_BN", backend="torch"), "kebab-case"),
                      (dict(name="new-one", backend="tflite"), "backend"),
                      (dict(name="new-one", backend="onnx", fixes=("arc002",)), "rule codes")]:
        name = kw.pop("name")
        with pytest.raises(TransformDefinitionError, match=match):
            transform(name, summary="x", **kw)
    with pytest.raises(TransformDefinitionError, match="summary"):
        transform("new-one", backend="onnx", summary=" ")
    assert CATALOG == before


def _everything() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def test_the_catalog_order_is_what_a_run_makes():
    from dldoctor.api.compress import _select

    assert catalog.names() == HISTORICAL_ORDER
    assert _select("pytorch", _everything(), None) == list(catalog.names())
    assert _select("onnx", None, None) == list(catalog.names("onnx"))
    assert catalog.names("torch") + catalog.names("onnx") == catalog.names()
    # -t keeps the order it is given in; an ONNX input gets only the ONNX transforms
    assert _select("pytorch", _everything(), ["onnx-fp16", "fold-conv-bn"]) == ["onnx-fp16", "fold-conv-bn"]
    assert _select("onnx", None, ["torch-fp16", "onnx-fp16"]) == ["onnx-fp16"]
    with pytest.raises(InputSpecError, match="unknown transform"):
        _select("pytorch", _everything(), ["zip"])


@pytest.mark.parametrize("model, left_out", [
    (nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), {"fold-conv-bn", "prune-50", "onnx-int8-static"}),
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), {"fold-conv-bn", "torch-int8-dynamic"}),
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), {"torch-int8-dynamic"}),
    (nn.GRU(4, 4), {"fold-conv-bn", "prune-50", "onnx-int8-static"}),
])
def test_what_a_transform_applies_to(model, left_out):
    from dldoctor.api.compress import _select

    assert _select("pytorch", model, None) == [n for n in HISTORICAL_ORDER if n not in left_out]


# -- --from-findings -----------------------------------------------------------------------------------------

# before the catalog: the names the findings carried, translated by a map in the runner
OLD_NAME = {"ARC002": "fuse-conv-bn", "EFF004": "fuse-conv-bn", "EFF001": "quantize-dynamic-int8", "EFF003": "fp16",
            "INI004": "prune-channels", "BUD003": "quantize", "BUD008": "quantize", "BUD004": "fp16", "BUD009": "fp16"}
OLD_MAP = {
    "quantize-dynamic-int8": ("onnx-int8-dynamic", "torch-int8-dynamic"),
    "quantize": ("onnx-int8-dynamic", "onnx-int8-static", "torch-int8-dynamic"),
    "fuse-conv-bn": ("fold-conv-bn",),
    "fp16": ("onnx-fp16", "torch-fp16"),
    "prune-channels": ("prune-50",),
}
# what they carry now: one transform each, a name `compress -t` takes
NEW_NAME = {"ARC002": "fold-conv-bn", "EFF004": "fold-conv-bn", "EFF001": "onnx-int8-dynamic", "EFF003": "onnx-fp16",
            "INI004": "prune-50", "BUD003": "onnx-int8-dynamic", "BUD008": "onnx-int8-dynamic",
            "BUD004": "onnx-fp16", "BUD009": "onnx-fp16"}


def _finding(code: str, transform: str | None = "new") -> SimpleNamespace:
    return SimpleNamespace(code=code, transform=NEW_NAME[code] if transform == "new" else transform)


def _old(codes: list[str]) -> list[str]:
    out: list[str] = []
    for c in codes:
        out += [n for n in OLD_MAP[OLD_NAME[c]] if n not in out]
    return out


def test_the_names_findings_carry_now():
    assert set(NEW_NAME.values()) == source_names()
    for code, name in NEW_NAME.items():
        assert code in catalog.get(name).fixes


@pytest.mark.parametrize("code", sorted(NEW_NAME))
def test_from_findings_selects_what_the_translation_map_did(code):
    assert catalog.for_findings([_finding(code)]) == _old([code])


def test_from_findings_keeps_the_order_of_the_findings():
    codes = ["EFF003", "ARC002", "BUD003", "EFF001", "INI004", "BUD004"]
    assert catalog.for_findings([_finding(c) for c in codes]) == _old(codes)
    assert catalog.for_findings([_finding(c) for c in reversed(codes)]) == _old(list(reversed(codes)))


def test_a_finding_without_a_transform_selects_nothing():
    # BUD009 names onnx-fp16 for inference memory only; its training-memory finding names none, and ARC002 names
    # fold-conv-bn only when a convolution keeps the bias (a Linear before BatchNorm1d has nothing to fold)
    assert catalog.for_findings([_finding("BUD009", None), _finding("ARC002", None)]) == []
    assert catalog.for_findings([SimpleNamespace(code="ARC004", transform=None)]) == []
