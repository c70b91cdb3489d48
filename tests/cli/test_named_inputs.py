"""-s NAME=D0,D1,...[:DTYPE] on the commands (issue 14), and --dtype (inputs) vs --precision (the model's) on profile."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from tests.collect.test_inputs import HAND_MACS

runner = CliRunner()
SPEC = "tests.collect.test_inputs:build"
NAMED = ["-s", "input_ids=1,16:int64", "-s", "pixel_values=1,3,32,32"]
FAST = ["--warmup", "1", "--iters", "3", "--no-whatifs", "-f", "json"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def embedder() -> nn.Module:  # tests.cli.test_named_inputs:embedder, a token model
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 4))


def keyword_metric():  # tests.cli.test_named_inputs:keyword_metric, an --eval factory calling by keyword
    g = torch.Generator().manual_seed(11)
    ids, pix = torch.randint(0, 100, (4, 16), generator=g), torch.randn(4, 3, 32, 32, generator=g)

    def fn(model) -> float:
        dt = next((p.dtype for p in model.parameters()), torch.float32)  # a fp16 variant takes fp16 images
        with torch.no_grad():
            return float(model(input_ids=ids, pixel_values=pix.to(dt)).float().sum())
    return fn


def test_inspect_named_inputs_json_and_rich():
    r = run("inspect", SPEC, *NAMED, "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["flops"]["macs"] == HAND_MACS and doc["flops"]["status"] == "complete"
    assert doc["inputs"] == [{"shape": [1, 16], "dtype": "int64", "assumed": False, "name": "input_ids"},
                             {"shape": [1, 3, 32, 32], "dtype": "float32", "assumed": False, "name": "pixel_values"}]
    r = run("inspect", SPEC, *NAMED)
    assert r.exit_code == 0, r.output
    assert "input_ids 1×16 int64" in r.output and "pixel_values 1×3×32×32 float32" in r.output


def test_check_mixed_positional_and_named():
    r = run("check", SPEC, "-s", "1,16:int64", "-s", "pixel_values=1,3,32,32", "-f", "json")
    assert r.exit_code in (0, 1), r.output
    doc = json.loads(r.stdout)
    rep = doc["reports"][0] if "reports" in doc else doc
    assert rep["flops"]["macs"] == HAND_MACS and [i.get("name") for i in rep["inputs"]] == [None, "pixel_values"]


@pytest.mark.parametrize("spec, what", [
    ("x=1,a", "bad input shape 'x=1,a'"),
    ("x=1,2:float33", "unknown dtype 'float33'"),
])
@pytest.mark.parametrize("command", ["inspect", "check", "profile", "probe"])
def test_bad_spec_is_one_line_exit_2(command, spec, what):
    r = run(command, SPEC, "-s", spec)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("dldoctor: error:") and what in lines[0] and "Traceback" not in r.output
    assert len(lines) == 2 and lines[1].strip().startswith("hint:")


def test_positional_after_named_is_a_usage_error():
    r = run("inspect", SPEC, "-s", "pixel_values=1,3,32,32", "-s", "1,16")
    assert r.exit_code == 2 and "positional input shape comes after a named one" in r.output


def test_profile_dtype_is_the_input_dtype():
    r = run("profile", "tests.cli.test_named_inputs:embedder", "--dtype", "int64", "-s", "1,16", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["inputs"] == [{"shape": [1, 16], "dtype": "int64", "assumed": False}]
    assert doc["profile"]["config"]["dtype"] == "fp32" and doc["profile"]["latency"][0]["p50"] > 0
    # the old spelling still works (hidden, deprecated)
    r = run("profile", "tests.cli.test_named_inputs:embedder", "--input-dtype", "int64", "-s", "1,16", *FAST)
    assert r.exit_code == 0, r.output


def _cpu_bf16() -> bool:  # as collect/whatif.py decides for bf16 autocast
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _cpu_bf16(), reason="this CPU has no bfloat16 support")
def test_profile_precision_bf16_keeps_int_inputs():
    r = run("profile", "tests.cli.test_named_inputs:embedder", "--dtype", "int64", "-s", "1,16", "--precision", "bf16", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["profile"]["config"]["dtype"] == "bf16" and doc["profile"]["latency"][0]["p50"] > 0
    assert doc["inputs"][0]["dtype"] == "int64"


def test_profile_and_probe_with_named_inputs():
    r = run("profile", SPEC, *NAMED, *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["profile"]["latency"][0]["error"] is None and doc["profile"]["latency"][0]["p50"] > 0
    r = run("probe", SPEC, "-s", "4,16:int64", "-s", "pixel_values=4,3,32,32", "--steps", "3", "-f", "json")
    assert r.exit_code in (0, 1), r.output
    assert json.loads(r.stdout)["probe"]["error"] is None
    # every input named (a Hugging Face model's input_ids=..., pixel_values=...): the batch is read from the first
    # keyword input, and every input of that batch size is grown to the probe's batch
    r = run("probe", SPEC, "-s", "input_ids=1,16:int64", "-s", "pixel_values=1,3,32,32", "--steps", "3",
            "--batch-size", "6", "-f", "json")
    assert r.exit_code in (0, 1), r.output
    p = json.loads(r.stdout)["probe"]
    assert p["error"] is None and p["inputs"]["shape"] == [6, 16] and p["inputs"]["dtype"] == "int64"
    assert p["config"]["batch_size"] == 6


def test_compress_feeds_keyword_inputs_by_name(tmp_path):
    """compress with -s NAME=...: the ONNX variants take input_ids (int64) and pixel_values (float32) by their names,
    the static int8 calibration feeds them by name, and the exported graph gives the model's own output on a feed
    built here (a positional misfeed would put the image where the ids go and fail or differ)."""
    import numpy as np
    import onnxruntime as ort

    out = tmp_path / "out"
    r = run("compress", SPEC, *NAMED, "-o", out, "-t", "onnx-optimized", "-t", "onnx-int8-static",
            "-t", "torch-int8-dynamic", "--keep-rejected", "--iters", "3", "-q", "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [i["name"] for i in doc["inputs"]] == ["input_ids", "pixel_values"]
    by = {v["name"]: v for v in doc["compress"]["variants"]}
    assert all(v["status"] != "failed" for v in by.values()), by
    assert by["onnx-optimized"]["fidelity"]["max_abs"] < 1e-4
    assert by["onnx-int8-static"]["fidelity"]["cosine"] > 0.99  # calibrated on both inputs
    sess = ort.InferenceSession(by["onnx-optimized"]["path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "pixel_values"]
    g = torch.Generator().manual_seed(3)
    ids, pix = torch.randint(0, 100, (2, 16), generator=g), torch.randn(2, 3, 32, 32, generator=g)
    from tests.collect.test_inputs import build

    with torch.no_grad():
        want = build()(ids, pixel_values=pix).numpy()
    got = sess.run(None, {"pixel_values": pix.numpy(), "input_ids": ids.numpy()})[0]
    assert np.allclose(got, want, atol=1e-5)


def test_compress_eval_calls_every_variant_by_keyword(tmp_path):
    """--eval's fn(model) calls model(input_ids=..., pixel_values=...): the PyTorch variants take it as the model
    does, the ONNX ones through a session that feeds by name; the optimised graph scores what the original does."""
    r = run("compress", SPEC, *NAMED, "-o", tmp_path / "out", "-t", "onnx-optimized", "-t", "torch-fp16",
            "--eval", "tests.cli.test_named_inputs:keyword_metric", "--max-drop", "1e9", "--iters", "3", "-q",
            "-f", "json")
    assert r.exit_code == 0, r.output
    by = {v["name"]: v for v in json.loads(r.stdout)["compress"]["variants"]}
    for name in ("onnx-optimized", "torch-fp16"):
        f = by[name]["fidelity"]
        assert by[name]["status"] != "failed" and f["metric"] is not None, by[name]
    f = by["onnx-optimized"]["fidelity"]
    assert abs(f["metric"] - f["metric_original"]) <= 1e-4 * max(1.0, abs(f["metric_original"]))


def test_a_keyword_forward_does_not_take_is_one_line_exit_2(tmp_path):
    """-s bogus=... names no parameter of forward(): compress says the forward failed and what to check (it said
    'internal error'), leaves no folder (not even the parent -o created); probe says the run did not start instead of 'None steps of None'."""
    r = run("compress", SPEC, "-s", "input_ids=1,16:int64", "-s", "bogus=1,3", "-o", tmp_path / "new" / "out",
            "--iters", "3")
    assert r.exit_code == 2 and "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert "forward pass failed on the example inputs" in r.output and "bogus" in r.output
    assert not (tmp_path / "new").exists()  # nor the folder above it that -o made
    r = run("probe", SPEC, "-s", "input_ids=1,16:int64", "-s", "bogus=1,3", "--steps", "3")
    assert r.exit_code == 2 and "did not start" in r.output and "None steps" not in r.output, r.output
