"""`dldoctor check` output in ruff's shapes, at 80 columns (a narrow terminal, and what a pipe gets without COLUMNS):
one line per finding `PATH:LOCATION: CODE message`, nothing split across lines, a summary, `All checks passed!`;
--output-format (alias --format/-f) concise/full/grouped, --show-fixes, --statistics; `dldoctor rules` one line per
rule and rule pages whose code lines stay whole; one JSON envelope for one model and for many; the skipped rules
counted in one stderr line (listed with --show-skipped); folder scans honour exclude globs and leave an ONNX
model's external data file alone; a finding computed at an assumed input says so."""
from __future__ import annotations

import json
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "80", "LINES": "50"}
SUMMARY = re.compile(r"^(Found \d+ (error|warning|info)s?(, \d+ (error|warning|info)s?)* in \d+ models?"
                     r"( \(.*\))?(; .*)?\.|All checks passed!|No findings in .*\.)$")


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env=ENV)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("check_output")
    torch.manual_seed(0)
    nn_path = d / "net.pt"
    # a CIFAR-sized net with nested layer paths: a conv bias before BatchNorm (ARC002) and, at the 224×224 input
    # guessed for it, a small receptive field (ARC010)
    features = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 8, 3, padding=1), stem_bn=nn.BatchNorm2d(8),
                                         act=nn.ReLU(), pool=nn.MaxPool2d(2), block1=nn.Conv2d(8, 16, 3, padding=1),
                                         act1=nn.ReLU()))
    head = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(16, 10)))
    torch.save(nn.Sequential(OrderedDict(features=features, head=head)), nn_path)
    twin = d / "twin.pt"
    twin.write_bytes(nn_path.read_bytes())
    return d


def findings_of(path, *extra):
    r = run("check", path, "-f", "json", "-q", *extra)
    assert r.exit_code in (0, 1), r.output
    return [f for rep in json.loads(r.stdout)["reports"] for f in rep["findings"]]


def test_concise_is_one_line_per_finding_in_ruffs_shape(files):
    path = files / "net.pt"
    found = findings_of(path)
    assert {f["code"] for f in found} >= {"ARC002", "ARC010"}, found
    r = run("check", path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == len(found) + 1, lines  # one per finding, then the summary
    shape = re.compile(rf"^{re.escape(str(path))}(:(?P<loc>[^ ]+))?: (?P<code>[A-Z]+\d+) (?P<msg>.+)$")
    seen = []
    for line in lines[:-1]:
        m = shape.match(line)
        assert m, line
        seen.append((m.group("code"), m.group("loc"), m.group("msg")))
    assert seen == [(f["code"], f["location"], f["message"]) for f in found]
    assert SUMMARY.match(lines[-1]) and lines[-1] == "Found 1 warning, 1 info in 1 model.", lines[-1]
    assert "skipped" not in r.stdout
    assert run("check", path, "-f", "rich").stdout == r.stdout  # the old name of the terminal output


def test_nothing_is_split_across_lines_at_80_columns(files):
    """Every code, layer path and number of every finding appears whole on one line, in every terminal form."""
    path = files / "net.pt"
    found = findings_of(path)
    for fmt in ("concise", "full", "grouped"):
        r = run("check", path, "--output-format", fmt, "--show-fixes")
        assert r.exit_code == 0, r.output
        text = r.stdout
        assert "│" not in text and "┃" not in text  # no table
        for f in found:
            assert any(f["code"] in ln and f["message"] in ln for ln in text.splitlines()), (fmt, f)
            if f["location"]:
                assert any(f["location"] + ": " in ln for ln in text.splitlines()), (fmt, f)
            assert any(f["fix"] in ln for ln in text.splitlines()), (fmt, f)


def test_full_grouped_show_fixes_and_statistics(files):
    path, twin = files / "net.pt", files / "twin.pt"
    found = findings_of(path)
    arc002 = next(f for f in found if f["code"] == "ARC002")
    full = run("check", path, "--output-format", "full").stdout.splitlines()
    i = next(i for i, ln in enumerate(full) if " ARC002 " in ln)
    assert full[i + 1] == f"  = rule: {arc002['name']} ({arc002['severity']})"
    assert full[i + 2].startswith(f"  = fix: {arc002['fix']}") and "fold-conv-bn" in full[i + 2]
    concise = run("check", path, "--show-fixes").stdout.splitlines()
    i = next(i for i, ln in enumerate(concise) if " ARC002 " in ln)
    assert concise[i + 1].startswith(f"  = fix: {arc002['fix']}")
    assert not any("= rule:" in ln for ln in concise)

    grouped = run("check", path, twin, "-f", "grouped").stdout.splitlines()
    assert grouped[0] == f"{path}:" and f"{twin}:" in grouped
    assert any(re.match(rf"^  {re.escape(arc002['location'])}: ARC002 ", ln) for ln in grouped), grouped
    assert grouped[-1] == "Found 2 warnings, 2 infos in 2 models."

    stats = run("check", path, twin, "--statistics")
    assert stats.exit_code == 0, stats.output
    lines = stats.stdout.splitlines()
    assert "2  ARC002  [warning] bias-before-batchnorm" in lines, lines
    assert not any(str(path) in ln for ln in lines)
    doc = json.loads(run("check", path, twin, "--statistics", "-f", "json").stdout)
    assert {"code": "ARC002", "name": "bias-before-batchnorm", "severity": "warning", "count": 2} in doc


def test_a_clean_model_says_all_checks_passed(files):
    r = run("check", files / "net.pt", "--select", "ARC001")
    assert r.exit_code == 0, r.output
    assert r.stdout == "All checks passed!\n"


def test_json_is_one_envelope_for_one_model_and_for_many(files):
    one = json.loads(run("check", files / "net.pt", "-f", "json", "-q").stdout)
    many = json.loads(run("check", files / "net.pt", files / "twin.pt", "-f", "json", "-q").stdout)
    assert set(one) == set(many) == {"schema_version", "summary", "reports", "errors"}
    assert len(one["reports"]) == 1 and len(many["reports"]) == 2
    assert one["schema_version"].split(".")[0] == "2" and one["summary"]["files"] == 1
    assert one["reports"][0]["findings"] == many["reports"][0]["findings"]


def test_skipped_rules_are_one_stderr_line_unless_asked(files):
    path = files / "net.pt"
    for args in (["check", path], ["inspect", path]):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert "skipped" not in r.stdout, r.stdout
        lines = [ln for ln in r.stderr.splitlines() if "skipped" in ln]
        assert len(lines) == 1, r.stderr
        assert re.match(r"^\d+ rules skipped: \d+ needs? .*--show-skipped lists them$", lines[0]), lines
        assert "(--loss)" in lines[0] and "probe" in lines[0]
        shown = run(*args, "--show-skipped")
        listed = [ln for ln in shown.stdout.splitlines() if "rules skipped" in ln]
        assert listed and all(ln.startswith(f"{path}: rules skipped (needs ") for ln in listed), shown.stdout
        assert any("OUT001" in ln for ln in listed)
        assert "--show-skipped lists them" not in shown.stderr
    quiet = run("check", path, "-q")
    assert "skipped" not in quiet.stdout + quiet.stderr
    machine = run("check", path, "-f", "json")
    assert "skipped" not in machine.stderr  # the document holds them
    assert "rules skipped" in machine.stdout


def test_an_assumed_input_is_said_in_the_findings_it_changes(files):
    path = files / "net.pt"
    guessed = {f["code"]: f["message"] for f in findings_of(path)}
    assert guessed["ARC010"].endswith(" (input assumed: pass --input-shape)"), guessed
    assert "input assumed" not in guessed["ARC002"]  # a finding that does not depend on the input size
    given = {f["code"]: f["message"] for f in findings_of(path, "-s", "1,3,224,224")}
    assert "input assumed" not in given["ARC010"]


# -- folders -------------------------------------------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path):
    d = tmp_path / "models"
    (d / "legacy").mkdir(parents=True)
    (d / "runs" / "old").mkdir(parents=True)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 4))
    for rel in ("a.pt", "legacy/b.pt", "runs/old/c.pt", "runs/d.ckpt", ".hidden/e.pt"):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(m, d / rel)
    return d


def checked(folder, *args, cwd=None):
    r = run("check", folder, "-f", "json", "-q", "-s", "1,8", *args)
    assert r.exit_code in (0, 1), r.output
    return sorted(rep["model"]["path"].replace(str(folder) + "/", "") for rep in json.loads(r.stdout)["reports"])


def test_exclude_globs_as_ruff(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configuration file above
    everything = ["a.pt", "legacy/b.pt", "runs/d.ckpt", "runs/old/c.pt"]
    assert checked(tree) == everything  # hidden entries are the default exclude
    assert checked(tree, "--extend-exclude", "*.ckpt") == ["a.pt", "legacy/b.pt", "runs/old/c.pt"]
    assert checked(tree, "--extend-exclude", "old,legacy") == ["a.pt", "runs/d.ckpt"]  # folders by name
    assert checked(tree, "--extend-exclude", "models/runs/*") == ["a.pt", "legacy/b.pt"]  # a path from the cwd
    assert checked(tree, "--extend-exclude", "legacy/*.pt") == ["a.pt", "runs/d.ckpt", "runs/old/c.pt"]  # from the folder
    assert checked(tree, "--exclude", "*.ckpt") == [".hidden/e.pt", "a.pt", "legacy/b.pt", "runs/old/c.pt"]
    assert checked(tree / "legacy" / "b.pt", "--extend-exclude", "*.pt") == [str(tree / "legacy" / "b.pt")]  # named
    (tmp_path / "pyproject.toml").write_text('[tool.dldoctor]\nextend-exclude = ["runs"]\n')
    assert checked(tree) == ["a.pt", "legacy/b.pt"]
    assert checked(tree, "--extend-exclude", "legacy") == ["a.pt"]  # the flag adds to the file's
    shown = run("config")
    assert 'exclude = [".*"]' in shown.stdout and 'extend-exclude = ["runs"]' in shown.stdout, shown.output
    (tmp_path / "pyproject.toml").write_text('[tool.dldoctor]\nexclude = ["legacy", ".*"]\n')
    assert checked(tree) == ["a.pt", "runs/d.ckpt", "runs/old/c.pt"]
    (tmp_path / "pyproject.toml").write_text('[tool.dldoctor]\nexclude = "*.pt"\nextend-exclude = [3]\n')
    r = run("check", tree)
    assert r.exit_code == 2 and "extend-exclude" in r.stderr, r.output
    (tmp_path / "pyproject.toml").unlink()
    everything_out = run("check", tree, "--extend-exclude", "*")
    assert everything_out.exit_code == 2 and "excluded" in everything_out.stderr, everything_out.output


def test_an_onnx_models_external_data_is_not_a_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    d = tmp_path / "exported"
    d.mkdir()
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(d / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (d / "weights.bin").is_file()
    r = run("check", d)
    assert r.exit_code in (0, 1), r.output
    assert "weights.bin" not in r.output
    doc = json.loads(run("check", d, "-f", "json", "-q").stdout)
    assert [rep["model"]["path"] for rep in doc["reports"]] == [str(d / "model.onnx")] and not doc["errors"]
    assert run("check", d / "weights.bin").exit_code == 2  # named on its own, it is tried (and is no model)


# -- dldoctor rules ------------------------------------------------------------------------------------------------


def test_rules_list_is_one_line_per_rule_at_80_columns():
    from dldoctor.rules.registry import all_rules

    rules = all_rules()
    r = run("rules")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) <= 3 * len(rules)
    for rule in rules:
        mine = [ln for ln in lines if ln.split()[:1] == [rule.code]]
        assert len(mine) == 1, (rule.code, mine)
        assert re.match(rf"^{rule.code} +{re.escape(rule.name)} +{rule.severity.value}\b", mine[0]), mine[0]
        assert len(mine[0]) <= 80
    wide = runner.invoke(app, ["rules"], env={"COLUMNS": "200"}).stdout.splitlines()
    assert len(wide) == len(lines) and any(rules[0].summary[:20] in ln for ln in wide)  # room for the summary


def test_rule_pages_wrap_prose_but_never_code():
    from dldoctor.rules.docs import rule_page
    from dldoctor.rules.registry import all_rules

    for rule in all_rules()[:12]:
        r = run("rules", "explain", rule.code)
        assert r.exit_code == 0, r.output
        out = r.stdout.splitlines()
        page = rule_page(rule)
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", page, flags=re.S | re.M):
            for code_line in block.splitlines():
                if code_line.strip():
                    assert any(ln.rstrip().endswith(code_line.rstrip()) for ln in out), (rule.code, code_line)
        assert any(ln.startswith(f"  code: {rule.code}") for ln in out)
        prose = [ln for ln in out if ln and not ln.startswith("    ")]
        assert max(len(ln.rstrip()) for ln in prose if not ln.startswith("  ")) <= 80


# -- names from a file are plain text ------------------------------------------------------------------------------


def test_names_from_the_file_are_shown_literally():
    from dldoctor.render import render
    from dldoctor.report.types import Finding, ModelInfo, Report

    rep = Report(model=ModelInfo(path="m[bold].pt", format="pytorch"),
                 findings=[Finding("ARC002", "bias-before-batchnorm", "warning", "a [red]b[/red]\nc\x1b[2J",
                                   location="blk[link=x].0", fix="[b]fix")])
    for fmt in ("concise", "full", "grouped"):
        text = render("check", fmt, [rep], width=80, summary={"files": 1})
        assert "[bold]" in text and "[red]b[/red]" in text and "blk[link=x].0" in text, text
        assert "\x1b" not in text and "\\x1b" in text and "a [red]b[/red]\\nc" in text, text
    line = render("check", "concise", [rep], width=80, summary={"files": 1}).splitlines()[0]
    assert line.startswith("m[bold].pt:blk[link=x].0: ARC002 a [red]b[/red]")


def test_probe_counts_skipped_rules_on_stderr_and_prints_an_error_once(tmp_path):
    torch.save(nn.Sequential(nn.Linear(8, 4)), tmp_path / "lin.pt")
    r = run("probe", tmp_path / "lin.pt", "-s", "4,8", "--steps", "2", "--no-attribution")
    assert r.exit_code in (0, 1), r.output
    assert "rules skipped" not in r.stdout and re.search(r"^\d+ rules skipped: ", r.stderr, re.M), r.output
    shown = run("probe", tmp_path / "lin.pt", "-s", "4,8", "--steps", "2", "--no-attribution", "--show-skipped")
    assert re.search(rf"^{re.escape(str(tmp_path / 'lin.pt'))}: rules skipped \(needs ", shown.stdout, re.M), shown.stdout
    broken = run("probe", tmp_path / "lin.pt", "-s", "4,5", "--steps", "2", "--no-attribution")
    assert broken.exit_code == 2, broken.output
    for line in (ln for ln in broken.stderr.splitlines() if ln.startswith("dldoctor: error:")):
        text = line.removeprefix("dldoctor: error: ")
        assert broken.output.count(text) == 1, (text, broken.output)  # once: not in the report nor a skip reason
