"""`dldoctor profile` and `dldoctor check --profile`: outputs, budgets, exit codes, the API."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import dldoctor
from dldoctor.cli import app
from tests.fixtures.probe_cases import cnn, mlp

runner = CliRunner()
FAST = ["--warmup", "2", "--iters", "5"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("profile")
    torch.save(mlp(depth=2), d / "mlp.pt")
    torch.save(mlp(depth=2).state_dict(), d / "weights.pt")
    torch.onnx.export(mlp(depth=2).eval(), (torch.randn(1, 20),), str(d / "mlp.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return d


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_profile_json_contract(files):
    r = run("profile", files / "mlp.pt", "--batch-sizes", "1,4", "--format", "json", "--no-whatifs", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    p = doc["profile"]
    assert [s["batch_size"] for s in p["latency"]] == [1, 4]
    for s in p["latency"]:
        assert s["error"] is None and len(s["samples"]) == s["iters"] >= 5
        assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
        assert s["throughput"] == pytest.approx(s["batch_size"] / s["p50"])
    assert p["best_batch_size"] in (1, 4) and p["ops"] and p["modules"]
    assert p["peak_flops_per_s"] and p["peak_flops_per_s"] > 0
    assert doc["schema_version"]


def test_profile_whatifs_and_rich(files):
    r = run("profile", files / "mlp.pt", *FAST)
    assert r.exit_code == 0, r.output
    assert "latency per forward" in r.stdout and "what-ifs" in r.stdout and "inference_mode" in r.stdout


def test_profile_onnx(files):
    r = run("profile", files / "mlp.onnx", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)["profile"]
    assert p["latency"][0]["p50"] > 0
    assert any(o["provider"] == "CPUExecutionProvider" for o in p["ops"])


def test_latency_budget_fails_ci(files, tmp_path):
    cfg = tmp_path / "dldoctor.toml"
    cfg.write_text("[budget]\nmax-latency-ms = 0.000001\n")  # no model runs in a nanosecond
    r = run("profile", files / "mlp.pt", "--config", cfg, "--no-whatifs", *FAST)
    assert r.exit_code == 1 and "BUD010" in r.stdout, r.output
    r = run("check", files / "mlp.pt", "--config", cfg, "--profile", "--format", "json")
    assert r.exit_code == 1, r.output
    assert any(f["code"] == "BUD010" for f in json.loads(r.stdout)["reports"][0]["findings"])
    r = run("check", files / "mlp.pt", "--config", cfg, "--format", "json")  # no --profile: skipped, said so
    doc = json.loads(r.stdout)["reports"][0]  # check -f json: one envelope, for one model too
    assert not any(f["code"] == "BUD010" for f in doc["findings"])
    assert any("BUD010" in d["message"] and "profile" in d["message"] for d in doc["diagnostics"])
    cfg.write_text("[budget]\nmax-latency-ms = 100000\n")
    assert run("check", files / "mlp.pt", "--config", cfg, "--profile").exit_code == 0


@pytest.mark.parametrize("args, what", [
    (["/no/such.pt"], "no such"),
    (["weights.pt"], "architecture"),
    (["mlp.pt", "--dtype", "int3"], "unknown dtype"),
    (["mlp.pt", "--precision", "fp8"], "unknown precision"),
    (["mlp.pt", "-s", "x=1,2:float33"], "unknown dtype"),
    (["mlp.pt", "--device", "tpu"], "unknown device"),
    (["mlp.pt", "--batch-sizes", "0"], "at least 1"),
    (["mlp.pt", "--format", "pdf"], "unknown format"),
])
def test_profile_bad_input_exit_2(files, args, what):
    args = [str(files / a) if a.endswith(".pt") and not a.startswith("/") else a for a in args]
    r = run("profile", *args, *FAST)
    assert r.exit_code == 2, r.output
    assert what in r.output.lower() and "Traceback" not in r.output


def test_api_profile_leaves_model_alone():
    m = cnn()
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    threads = torch.get_num_threads()
    rep = dldoctor.profile(m, input_shapes=[[1, 3, 32, 32]], warmup=2, iters=5, threads=1, whatifs=False)
    assert rep.profile.at(1).p50 > 0
    assert m.training and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.get_num_threads() == threads
    assert all(not x._forward_hooks and not x._forward_pre_hooks for x in m.modules())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_profile_cuda_fp16(files):
    r = run("profile", files / "mlp.pt", "--device", "cuda", "--precision", "fp16", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["profile"]["latency"][0]
    assert s["p50"] > 0 and s["peak_memory"] is not None
