"""`dldoctor diff`: deltas equal the hand-computed differences, saved reports as a side, growth budgets as exit codes."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.api.diff import check_budgets, diff_reports, load_report_file, parse_growth
from dldoctor.errors import LoadError
from dldoctor.report.figures import Figure, growth_verdict
from dldoctor.render.rich.diff import render_diff_markdown
from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE, FlopStats, Finding, LayerInfo, ModelInfo, ParamStats, Report

runner = CliRunner()


def mlp(hidden: int) -> nn.Module:
    # params: 16*h + h + h*8 + 8 = 25h + 8; MACs on a 1x16 input: 16h + 8h = 24h
    return nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 8))


OLD_PARAMS, NEW_PARAMS = 25 * 32 + 8, 25 * 64 + 8  # 808, 1608
OLD_MACS, NEW_MACS = 24 * 32, 24 * 64  # 768, 1536


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    torch.save(mlp(32), old)
    torch.save(mlp(64), new)
    return old, new


def run(*args):
    return runner.invoke(app, ["diff", *[str(a) for a in args]])


def metrics(doc: dict) -> dict[str, dict]:
    return {m["key"]: m for m in doc["metrics"]}


def test_deltas_equal_hand_computed(files):
    r = run(*files, "-s", "1,16", "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "dldoctor-diff" and doc["schema_version"]
    m = metrics(doc)
    assert (m["params"]["old"], m["params"]["new"], m["params"]["delta"]) == (OLD_PARAMS, NEW_PARAMS, 800)
    assert (m["macs"]["old"], m["macs"]["new"], m["macs"]["delta"]) == (OLD_MACS, NEW_MACS, 768)
    assert m["flops"]["delta"] == 2 * 768
    assert m["size"]["delta"] == 800 * 4  # fp32, no buffers
    assert m["params"]["change_pct"] == pytest.approx(100 * 800 / 808, abs=1e-3)
    assert m["macs"]["change_pct"] == pytest.approx(100.0)
    assert m["inference_memory"]["delta"] > 0 and m["training_memory"]["delta"] > 0
    layers = {c["path"]: c for c in doc["layers"]}
    assert set(layers) == {"0", "1", "2"} and all(c["change"] == "changed" for c in layers.values())
    assert layers["0"]["params_old"] == 16 * 32 + 32 and layers["0"]["params_new"] == 16 * 64 + 64
    assert layers["1"]["fields"] == ["output_shape"]  # ReLU: only its output widened
    assert layers["2"]["output_shape_old"] == layers["2"]["output_shape_new"] == [[1, 8]]


def test_identical_models_zero_deltas(files):
    old, _ = files
    r = run(old, old, "-s", "1,16", "-f", "json", "--max-params-growth", "0%", "--max-macs-growth", "0")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    for m in doc["metrics"]:
        assert m["delta"] == 0 and m["change_pct"] == 0.0, m
    assert doc["layers"] == [] and doc["passed"] is True
    assert doc["receptive_field"]["delta"] is None  # an MLP has no spatial field


def test_json_report_as_one_side(files, tmp_path):
    old, new = files
    saved = tmp_path / "old.json"
    r = runner.invoke(app, ["inspect", str(old), "-s", "1,16", "-f", "json", "-o", str(saved)])
    assert r.exit_code == 0, r.output
    # no --input-shape: the model side is measured on the saved report's input
    r = run(saved, new, "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    m = metrics(doc)
    assert (m["params"]["delta"], m["macs"]["delta"]) == (800, 768)
    assert doc["old"]["source"] == str(saved) and doc["old"]["path"].endswith("old.pt")
    assert doc["new"]["inputs"][0]["shape"] == [1, 16]
    # a {"reports": [...]} file with one report works too
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"schema_version": "1.0", "reports": [json.loads(saved.read_text())]}))
    r = run(new, wrapped, "-f", "json")
    assert r.exit_code == 0, r.output
    assert metrics(json.loads(r.stdout))["params"]["delta"] == -800


def test_growth_budgets_exit_codes(files):
    old, new = files
    r = run(old, new, "-s", "1,16", "--max-params-growth", "5%")
    assert r.exit_code == 1, r.output
    assert "budget exceeded" in r.stderr and "parameters grew +99.0%" in r.stderr and "+5.0%" in r.stderr
    r = run(old, new, "-s", "1,16", "--max-params-growth", "100%", "--max-macs-growth", "1.0")
    assert r.exit_code == 0, r.output  # +99.0% params, +100.0% MACs: both within
    r = run(old, new, "-s", "1,16", "--max-macs-growth", "0.5", "--max-size-growth", "200%")
    assert r.exit_code == 1 and "MACs grew +100.0%" in r.stderr and "model size" not in r.stderr
    r = run(new, old, "-s", "1,16", "--max-memory-growth", "0%", "--max-params-growth", "-40%")
    assert r.exit_code == 0, r.output  # a shrink passes even a "must shrink 40%" budget (it shrank 49.8%)


def test_bad_files_exit_2(files, tmp_path):
    old, _ = files
    r = run(tmp_path / "missing.pt", old)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.startswith("dldoctor: error:") and "missing.pt" in r.stderr
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    r = run(junk, old)
    assert r.exit_code == 2 and "not a dldoctor report" in r.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = run(old, broken)
    assert r.exit_code == 2 and "not valid JSON" in r.stderr
    r = run(old, old, "--max-macs-growth", "lots")
    assert r.exit_code == 2 and "--max-macs-growth" in r.stderr
    r = run(old, old, "--format", "html")
    assert r.exit_code == 2 and "unknown format" in r.stderr


def test_outputs_to_file(files, tmp_path):
    old, new = files
    for fmt in ("rich", "markdown", "json"):
        out = tmp_path / f"diff.{fmt}"
        r = run(old, new, "-s", "1,16", "-f", fmt, "-o", out)
        assert r.exit_code == 0, r.output
        assert r.stdout == ""
        text = out.read_text()
        assert "parameters" in text
    md = (tmp_path / "diff.markdown").read_text()
    assert "| parameters | 808 | 1.61 K | +800 | +99.0% |" in md
    assert list(tmp_path.glob(".*.tmp")) == []


# -- the library, on hand-built reports ----------------------------------------------


def report(params: int, macs: int | None, status: str = COMPLETE, findings=(), layers=()) -> Report:
    return Report(
        model=ModelInfo(path="m.pt", format="torch-module"),
        params=ParamStats(total=params, trainable=params, bytes=4 * params),
        flops=FlopStats(status=status, macs=macs, flops=None if macs is None else 2 * macs,
                        reason=None if status == COMPLETE else "ops without a MAC formula: foo"),
        findings=list(findings),
        layers=list(layers),
    )


def test_findings_new_and_fixed():
    a = Finding("ARC004", "dropout-too-high", "warning", "p=0.8", location="head.drop")
    b = Finding("ARC001", "large-kernel", "info", "7x7", location="stem")
    c = Finding("ARC004", "dropout-too-high", "warning", "p=0.9", location="body.drop")
    old = report(10, 10, findings=[a, b])
    new = report(10, 10, findings=[Finding(**{**a.__dict__, "message": "p=0.7"}), c])
    d = diff_reports(old, new)
    assert d.findings_compared
    assert [(f.code, f.location) for f in d.new_findings] == [("ARC004", "body.drop")]
    assert [(f.code, f.location) for f in d.fixed_findings] == [("ARC001", "stem")]
    checks = check_budgets(d, old, new, fail_on_new_findings=True)
    assert [x.verdict for x in checks] == ["exceeded"] and "ARC004 at body.drop" in checks[0].message
    assert "new `ARC004`" in render_diff_markdown(d)
    same = diff_reports(old, old)
    assert not same.new_findings and not same.fixed_findings
    assert check_budgets(same, old, old, fail_on_new_findings=True)[0].verdict == "ok"
    none = diff_reports(report(1, 1), report(1, 1))
    assert not none.findings_compared


def test_fail_on_new_findings_cli(tmp_path):
    a = Finding("ARC004", "dropout-too-high", "warning", "p=0.8", location="head.drop")
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(report(10, 10, findings=[a]).to_dict()))
    new.write_text(json.dumps(report(10, 10, findings=[a, Finding("OUT001", "x", "error", "y", location="fc")]).to_dict()))
    r = run(old, new, "--fail-on-new-findings")
    assert r.exit_code == 1 and "OUT001 at fc" in r.stderr
    r = run(new, old, "--fail-on-new-findings", "-f", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["findings"]["fixed"][0]["code"] == "OUT001"


def test_layer_added_removed_changed():
    old = report(10, 10, layers=[LayerInfo("a", "Linear", [[1, 4]], 20, 16), LayerInfo("b", "ReLU", [[1, 4]])])
    new = report(10, 10, layers=[LayerInfo("a", "Linear", [[1, 4]], 20, 16), LayerInfo("c", "GELU", [[1, 4]])])
    d = diff_reports(old, new)
    assert [(c.path, c.change) for c in d.layers] == [("c", "added"), ("b", "removed")]


def test_growth_verdict_is_honest_about_partial_and_unavailable():
    def fig(v, s=COMPLETE):
        return Figure("macs", "MACs", "MACs", v, s, None if s == COMPLETE else "why")

    assert growth_verdict(fig(100), fig(104), 0.05) == "ok"
    assert growth_verdict(fig(100), fig(106), 0.05) == "exceeded"
    assert growth_verdict(fig(100), fig(106, PARTIAL), 0.05) == "exceeded"  # a lower bound already over
    assert growth_verdict(fig(100), fig(101, PARTIAL), 0.05) == "unconfirmed"
    assert growth_verdict(fig(100, PARTIAL), fig(106), 0.05) == "unconfirmed"  # the real OLD may be larger
    assert growth_verdict(fig(100, PARTIAL), fig(101), 0.05) == "ok"  # the real growth is smaller still
    assert growth_verdict(fig(None, UNAVAILABLE), fig(10), 0.05) == "unavailable"
    assert growth_verdict(fig(0), fig(1), 0.05) == "exceeded"


def test_unchecked_budget_warns_but_passes(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(report(10, 100).to_dict()))
    new.write_text(json.dumps(report(10, None, UNAVAILABLE).to_dict()))
    r = run(old, new, "--max-macs-growth", "5%")
    assert r.exit_code == 0
    assert "warning" in r.stderr and "not checked" in r.stderr


def test_parse_growth():
    assert parse_growth("5%") == pytest.approx(0.05)
    assert parse_growth(" 0.05 ") == pytest.approx(0.05)
    assert parse_growth("-10%") == pytest.approx(-0.10)
    with pytest.raises(ValueError):
        parse_growth("five")


def test_load_report_file_picks_by_model_path(tmp_path):
    a, b = report(1, 1), report(2, 2)
    b.model.path = "other/b.pt"
    f = tmp_path / "many.json"
    f.write_text(json.dumps({"schema_version": "1.0", "reports": [a.to_dict(), b.to_dict()]}))
    assert load_report_file(str(f), "b.pt").params.total == 2
    with pytest.raises(LoadError):
        load_report_file(str(f))


def test_model_side_takes_the_saved_input_or_falls_back(tmp_path, files):
    old, _ = files
    saved = tmp_path / "old.json"
    assert runner.invoke(app, ["inspect", str(old), "-s", "1,16", "-f", "json", "-o", str(saved)]).exit_code == 0
    narrow = tmp_path / "narrow.pt"
    torch.save(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 8)), narrow)  # cannot take 1x16
    r = run(saved, narrow, "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["new"]["inputs"][0]["shape"] == [1, 8]
    assert any("cannot run on the input of" in n for n in doc["notes"])
    assert any("different inputs" in n for n in doc["notes"])


def test_forward_failure_on_a_model_side_exits_2(tmp_path, files):
    old, _ = files
    broken = tmp_path / "broken.pt"
    torch.save(nn.Sequential(nn.Linear(16, 32), nn.Linear(16, 8)), broken)  # 32 -> 16 mismatch
    r = run(old, broken, "-s", "1,16")
    assert r.exit_code == 2 and "NEW:" in r.stderr and "forward pass failed" in r.stderr


def test_rules_run_on_model_sides(files, tmp_path):
    old, new = files
    cfg = tmp_path / "dldoctor.toml"
    cfg.write_text("[budget]\nmax-params = 1000\n")  # 808 fits, 1608 does not
    r = run(old, new, "-s", "1,16", "--config", cfg, "--fail-on-new-findings", "-f", "json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert "BUD001" in [f["code"] for f in doc["findings"]["new"]] and doc["findings"]["fixed"] == []
    assert "BUD001" in r.stderr
    r = run(new, old, "-s", "1,16", "--config", cfg, "--fail-on-new-findings", "-f", "json")
    assert r.exit_code == 0, r.output
    assert "BUD001" in [f["code"] for f in json.loads(r.stdout)["findings"]["fixed"]]
    r = run(old, new, "-s", "1,16", "--config", cfg, "--no-rules", "--fail-on-new-findings", "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["findings"]["compared"] is False


def test_growth_budgets_from_config_file(files, tmp_path):
    old, new = files
    cfg = tmp_path / "dldoctor.toml"
    cfg.write_text("[budget]\nmax-macs-growth = 0.05\n")
    r = run(old, new, "-s", "1,16", "--config", cfg)
    assert r.exit_code == 1 and "MACs grew +100.0%" in r.stderr, r.output
    r = run(old, new, "-s", "1,16", "--config", cfg, "--max-macs-growth", "150%")  # the flag overrides the file
    assert r.exit_code == 0, r.output


def test_a_model_side_borrows_named_inputs_with_their_dtypes(tmp_path):
    """A saved report measured at keyword inputs (T5: input_ids and decoder_input_ids) lends them to the model side
    by name and dtype: the same folder diffs to zero MACs. Passing them positionally (the old borrow) fed
    decoder_input_ids to T5's second parameter, attention_mask."""
    tf = pytest.importorskip("transformers")
    cfg = tf.T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=100)
    folder = tmp_path / "t5"
    tf.T5ForConditionalGeneration(cfg).save_pretrained(str(folder))
    saved = tmp_path / "t5.json"
    r = runner.invoke(app, ["inspect", str(folder), "-s", "input_ids=1,16", "-s", "decoder_input_ids=1,8",
                            "--no-training", "-f", "json", "-o", str(saved)])
    assert r.exit_code == 0, r.output
    r = run(saved, folder, "-f", "json", "--no-training")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [(i["name"], i["shape"], i["dtype"]) for i in doc["new"]["inputs"]] == [
        ("input_ids", [1, 16], "int64"), ("decoder_input_ids", [1, 8], "int64")]
    assert metrics(doc)["macs"]["delta"] == 0
    assert not any("different inputs" in n for n in doc["notes"])


def test_loss_reaches_the_model_sides(tmp_path):
    """--loss on diff as on inspect and check: the output rules of the model sides judge against it (a softmax head
    is an error under cross-entropy, a bounded regression output under MSE)."""
    old, new = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(nn.Sequential(nn.Linear(16, 8)), old)
    torch.save(nn.Sequential(nn.Linear(16, 8), nn.Softmax(-1)), new)
    codes = {}
    for loss in ("ce", "mse"):
        r = run(old, new, "-s", "1,16", "-f", "json", "--loss", loss)
        assert r.exit_code == 0, r.output
        codes[loss] = {f["code"] for f in json.loads(r.stdout)["findings"]["new"]}
    assert "OUT001" in codes["ce"] and "OUT005" in codes["mse"] and "OUT001" not in codes["mse"]
