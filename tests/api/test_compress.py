"""`dldoctor compress`: variants measured against the original, regressions rejected, the input never touched."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.api.compress import _fidelity_drop, _judge, parse_drop
from dldoctor.report.compress_types import Fidelity, Variant

runner = CliRunner()
FAST = ["--iters", "8", "-q"]


def linear_heavy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def raising_batches():
    raise RuntimeError("the calibration loader is broken")


@pytest.fixture()
def mlp_file(tmp_path):
    p = tmp_path / "in" / "mlp.pt"
    p.parent.mkdir()
    torch.save(linear_heavy(), p)
    return p


def run(*args):
    return runner.invoke(app, ["compress", *[str(a) for a in args]])


def test_linear_heavy_model_gets_a_measured_int8_variant(mlp_file, tmp_path):
    before = (mlp_file.read_bytes(), os.stat(mlp_file).st_mtime_ns)
    out = tmp_path / "out"
    r = run(mlp_file, "-o", out, "-t", "onnx-int8-dynamic", "-t", "torch-fp16", "-t", "onnx-optimized",
            "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    assert (mlp_file.read_bytes(), os.stat(mlp_file).st_mtime_ns) == before  # the input is never touched
    doc = json.loads(r.stdout)
    res = doc["compress"]
    by = {v["name"]: v for v in res["variants"]}
    q = by["onnx-int8-dynamic"]
    assert q["status"] in ("kept", "recommended", "rejected") and q["size_ratio"] >= 3.5, q
    assert q["fidelity"]["cosine"] >= 0.99 and q["fidelity"]["top1"] >= 0.95
    assert q["preparation"], "the report says what preparation made the quantizer work"
    assert res["original"]["p50"] > 0 and q["p50"] > 0
    t = q["timing"]  # timed against the original in interleaved rounds: the median ratio and its interval
    assert q["speedup"] == t["ratio"] and q["p50"] == t["variant_s"] and t["ci_low"] <= t["ratio"] <= t["ci_high"]
    assert t["verdict"] in ("faster", "slower", "no measurable difference", "measurement error") and t["rounds"] >= 3
    if q["status"] == "recommended":
        assert t["verdict"] == "faster" and t["ci_low"] >= 1.1
    # what is kept is written, what is rejected is not; the JSON report sits beside them
    for v in res["variants"]:
        if v["status"] in ("kept", "recommended"):
            assert v["path"] and os.path.exists(v["path"]) and os.path.dirname(v["path"]) == str(out)
            umask = os.umask(0)
            os.umask(umask)
            assert os.stat(v["path"]).st_mode & 0o777 == 0o666 & ~umask  # as readable as a plain open() makes it
        else:
            assert v["path"] is None
    assert json.loads((out / "compress-report.json").read_text())["compress"]["recommended"] == res["recommended"]
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no work or temp files left behind


def test_failing_calibration_fails_one_variant_only(tmp_path):
    p = tmp_path / "cnn.pt"
    torch.save(small_cnn(), p)
    r = run(p, "-o", tmp_path / "o", "-s", "1,3,32,32", "-t", "onnx-int8-static", "-t", "fold-conv-bn",
            "--calib", "tests.api.test_compress:raising_batches", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    by = {v["name"]: v for v in json.loads(r.stdout)["compress"]["variants"]}
    assert by["onnx-int8-static"]["status"] == "failed" and "calibration" in by["onnx-int8-static"]["reason"]
    fold = by["fold-conv-bn"]
    assert fold["status"] != "failed" and fold["fidelity"]["max_abs"] < 1e-3
    assert fold["ops_after"].get("BatchNorm2d", 0) == 0


def test_no_variant_produced_exits_1(tmp_path):
    p = tmp_path / "m.pt"
    torch.save(linear_heavy(), p)
    r = run(p, "-o", tmp_path / "o", "-t", "onnx-int8-static", "--calib", "tests.api.test_compress:raising_batches", *FAST)
    # onnx-int8-static does not apply to a model without convolutions: nothing to make
    assert r.exit_code == 1, r.output


@pytest.mark.parametrize("args, what", [
    (["/no/such.pt"], "no such"),
    (["{m}", "-t", "zip"], "unknown transform"),
    (["{m}", "--max-drop", "lots"], "max-drop"),
    (["{m}", "--optimize", "beauty"], "optimize"),
    (["{m}", "-o", "{dir}"], "beside or over the input"),
])
def test_bad_usage_exit_2(mlp_file, args, what):
    args = [a.format(m=mlp_file, dir=mlp_file.parent) for a in args]
    r = run(*args, *FAST)
    assert r.exit_code == 2, r.output
    assert what in r.output.lower() and "Traceback" not in r.output


def test_verdicts():
    orig = Variant(name="original", transform="none", format="pytorch", size_bytes=1000, p50=0.010)
    fast_small = Variant(name="a", transform="a", format="onnx", size_bytes=250, p50=0.005,
                         fidelity=Fidelity(cosine=0.999, top1=1.0))
    _judge(fast_small, orig, 0.01, True)
    assert fast_small.status == "kept" and fast_small.size_ratio == 4 and fast_small.speedup == 2
    bigger = Variant(name="b", transform="b", format="onnx", size_bytes=1200, p50=0.005, fidelity=Fidelity(cosine=1.0))
    _judge(bigger, orig, 0.01, True)
    assert bigger.status == "rejected" and "bigger" in bigger.reason
    slower = Variant(name="c", transform="c", format="onnx", size_bytes=500, p50=0.02, fidelity=Fidelity(cosine=1.0))
    _judge(slower, orig, 0.01, True)
    assert slower.status == "rejected" and "slower" in slower.reason
    assert _fidelity_drop(Fidelity(top1=0.98), 0.01, True) and not _fidelity_drop(Fidelity(top1=0.995), 0.01, True)
    assert _fidelity_drop(Fidelity(metric=0.90, metric_original=0.92), 0.01, True)  # 2.2% relative drop
    assert not _fidelity_drop(Fidelity(metric=0.915, metric_original=0.92), 0.01, False)  # 0.005 absolute
    assert parse_drop("1%") == (0.01, True) and parse_drop("0.02") == (0.02, False)


def test_pareto_front():
    from dldoctor.api.compress import _pareto
    from dldoctor.report.compress_types import CompressResult

    orig = Variant(name="original", transform="none", format="pytorch", size_bytes=1000, p50=0.010, status="original")
    small = Variant(name="small", transform="a", format="onnx", size_bytes=250, p50=0.012, status="kept",
                    fidelity=Fidelity(cosine=0.995))
    dominated = Variant(name="worse", transform="b", format="onnx", size_bytes=300, p50=0.013, status="kept",
                        fidelity=Fidelity(cosine=0.99))
    fast = Variant(name="fast", transform="c", format="onnx", size_bytes=900, p50=0.004, status="kept",
                   fidelity=Fidelity(cosine=0.999))  # the original alone keeps the exact outputs
    res = CompressResult(original=orig, variants=[small, dominated, fast])
    _pareto(res)
    assert (orig.pareto, small.pareto, dominated.pareto, fast.pareto) == (True, True, False, True)


def test_every_transform_a_finding_names_is_known():
    import re
    from pathlib import Path

    from dldoctor.transforms.catalog import CATALOG

    catalog = Path(__file__).resolve().parents[2] / "dldoctor" / "rules" / "catalog"
    named = set()
    for f in catalog.glob("*.py"):
        named |= set(re.findall(r'transform="([a-z0-9-]+)"', f.read_text()))
        named |= set(re.findall(r'"(?:size|inference_memory)": "([a-z0-9-]+)"', f.read_text()))
    # one name per transform: what a finding names is what `compress -t` takes (no translation table)
    assert named and named <= set(CATALOG), named - set(CATALOG)


def test_from_findings_without_findings_keeps_to_the_optimised_graph(mlp_file, tmp_path):
    r = run(mlp_file, "-o", tmp_path / "o", "--from-findings", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    assert [v["name"] for v in json.loads(r.stdout)["compress"]["variants"]] == ["onnx-optimized"]


def test_from_findings_applies_the_transform_a_finding_names(tmp_path):
    # small_cnn's convolutions keep a bias before their BatchNorm: ARC002's finding names fold-conv-bn
    p = tmp_path / "cnn.pt"
    torch.save(small_cnn(), p)
    r = run(p, "-o", tmp_path / "o", "-s", "1,3,32,32", "--from-findings", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert "fold-conv-bn" in [f["transform"] for f in doc["findings"] if f["code"] == "ARC002"]
    assert [v["name"] for v in doc["compress"]["variants"]] == ["onnx-optimized", "fold-conv-bn"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_latency_of_torch_variants(mlp_file, tmp_path):
    r = run(mlp_file, "-o", tmp_path / "o", "-t", "torch-fp16", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["compress"]
    assert doc["original"]["p50_cuda"] > 0 and doc["variants"][0]["p50_cuda"] > 0
    r = run(mlp_file, "-o", tmp_path / "c", "-t", "torch-fp16", "--format", "json", "--device", "cpu", *FAST)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["compress"]
    assert doc["original"]["p50_cuda"] is None and doc["variants"][0]["p50_cuda"] is None  # --device cpu: CPU only


def test_device_is_checked_before_anything_loads(mlp_file, tmp_path):
    """compress --device as on profile: an unknown device, or cuda where there is none, exits 2 up front."""
    r = run(mlp_file, "-o", tmp_path / "o", "--device", "gpu", *FAST)
    assert r.exit_code == 2 and "unknown device" in r.output
    if not torch.cuda.is_available():
        r = run(mlp_file, "-o", tmp_path / "o", "--device", "cuda", *FAST)
        assert r.exit_code == 2 and "CUDA is not available" in r.output
    assert not (tmp_path / "o").exists()


def mean_output_metric():
    """An --eval factory: the metric is minus the mean |output - fp32 reference| on fixed inputs (higher is better)."""
    x = torch.randn(32, 256, generator=torch.Generator().manual_seed(5))
    ref = linear_heavy().eval()(x).detach()

    def metric(model) -> float:
        dt = next((p.dtype for p in model.parameters()), torch.float32)  # a fp16 variant takes fp16 inputs
        with torch.inference_mode():
            return -float((model(x.to(dt)).float() - ref).abs().mean())

    return metric


def test_eval_metric_judges_torch_and_onnx_variants(mlp_file, tmp_path):
    r = run(mlp_file, "-o", tmp_path / "o", "-t", "onnx-int8-dynamic", "-t", "torch-fp16", "--max-drop", "0.5",
            "--eval", "tests.api.test_compress:mean_output_metric", "--format", "json", *FAST)
    assert r.exit_code == 0, r.output
    for v in json.loads(r.stdout)["compress"]["variants"]:
        f = v["fidelity"]
        assert f["metric"] is not None and f["metric_original"] == pytest.approx(0.0, abs=1e-6), v
        assert f["metric"] <= 0


def test_recommendation_breaks_timing_ties_by_size():
    from dldoctor.api.compress import _recommend
    from dldoctor.report.compress_types import CompressResult

    a = Variant(name="a", transform="a", format="onnx", size_bytes=300, p50=0.00630, status="kept")
    b = Variant(name="b", transform="b", format="onnx", size_bytes=100, p50=0.00640, status="kept")  # 1.6% slower
    c = Variant(name="c", transform="c", format="onnx", size_bytes=50, p50=0.00900, status="kept")
    res = CompressResult(variants=[a, b, c])
    _recommend(res)
    assert res.recommended == "b"
    for v in (a, b, c):
        v.status = "kept"
    res = CompressResult(variants=[a, b, c], optimize="size")
    _recommend(res)
    assert res.recommended == "c"


def test_api_refuses_an_output_folder_that_holds_the_input(mlp_file):
    """The Python API checks the output folder as the CLI does (after loading: it knows the source then)."""
    from dldoctor.api.compress import compress
    from dldoctor.errors import DLDoctorError

    before = sorted(p.name for p in mlp_file.parent.iterdir())
    with pytest.raises(DLDoctorError, match="beside or over the input|which this run reads"):
        compress(str(mlp_file), out_dir=str(mlp_file.parent), transforms=["torch-fp16"], iters=2, warmup=1)
    assert sorted(p.name for p in mlp_file.parent.iterdir()) == before


def test_an_onnx_graph_with_a_fixed_batch_is_measured_at_that_batch(tmp_path):
    """A graph exported with a fixed batch of 1 (torch.onnx.export's default) runs only at batch 1: compress's held
    and calibration batches follow the declared batch (it raised ONNX Runtime's INVALID_ARGUMENT at batch 8)."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    p = tmp_path / "fixed.onnx"
    torch.onnx.export(m, (torch.randn(1, 3, 16, 16),), str(p), dynamo=False)
    r = run(p, "-o", tmp_path / "o", "-t", "onnx-optimized", "-t", "onnx-int8-static", *FAST)
    assert r.exit_code in (0, 1) and "internal error" not in r.output and "INVALID_ARGUMENT" not in r.output, r.output


def test_precision_bf16_measures_the_original_as_it_computes(tmp_path):
    """--precision bf16: the original is a bf16 copy (its size that of the bf16 weights, about half the fp32 file),
    a bf16 cast variant is left out and said so, the folded variant is built from the fp32 weights and then cast
    to bf16 (its saved tensors are bf16), and it agrees with the bf16 original within bf16's rounding."""
    import io

    from dldoctor.api.compress import compress

    p = tmp_path / "in" / "cnn.pt"
    p.parent.mkdir()
    torch.save(small_cnn().eval(), p)
    r = compress(str(p), out_dir=str(tmp_path / "out"), transforms=["fold-conv-bn", "torch-bf16", "torch-fp16"],
                 precision="bf16", keep_rejected=True, iters=3, held=16, budget=0.3)
    res = r.compress
    assert res.precision == "bf16" and [v.name for v in res.variants] == ["fold-conv-bn", "torch-fp16"]
    assert any("left out: torch-bf16" in n for n in res.notes)
    buf = io.BytesIO()
    torch.save(small_cnn().eval().to(torch.bfloat16), buf)
    assert res.original.size_bytes == pytest.approx(len(buf.getvalue()), rel=0.02)
    assert res.original.size_bytes < 0.6 * os.path.getsize(p)
    fold = res.variants[0]
    assert fold.status != "failed", fold.reason
    folded = torch.load(fold.path, weights_only=False)
    assert {t.dtype for t in folded.state_dict().values() if t.is_floating_point()} == {torch.bfloat16}
    assert fold.fidelity.cosine > 0.999
    fp16 = res.variants[1]
    assert fp16.status != "failed" and fp16.fidelity.cosine > 0.999


def test_precision_is_checked_and_refused_for_onnx(tmp_path):
    m = nn.Sequential(nn.Linear(8, 4)).eval()
    p = tmp_path / "m.onnx"
    torch.onnx.export(m, (torch.randn(1, 8),), str(p), dynamo=False)
    r = run(p, "-o", tmp_path / "o", "--precision", "fp16", *FAST)
    assert r.exit_code == 2 and "applies to a PyTorch model" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()
    r = run(p, "-o", tmp_path / "o", "--precision", "fp8", *FAST)
    assert r.exit_code == 2 and "fp8" in r.output and "Traceback" not in r.output, r.output


def test_fidelity_streams_batches_and_matches_a_float64_reference():
    """fidelity() works batch by batch in float32 with float64 accumulation (LLM logits are gigabytes): its figures
    equal the plain float64 formulas on the concatenated outputs, a zero row and a flipped row included."""
    import numpy as np

    from dldoctor.api.compress import fidelity

    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((8, 3, 7), dtype=np.float32) for _ in range(3)]
    got = [r + 1e-3 * rng.standard_normal(r.shape, dtype=np.float32) for r in ref]
    got[0][1] = -got[0][1]
    got[2][5] = 0
    a = np.concatenate([r.reshape(8, -1) for r in ref]).astype(np.float64)
    b = np.concatenate([g.reshape(8, -1) for g in got]).astype(np.float64)
    cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    f = fidelity(ref, got, classifier=False)
    assert f.samples == 24 and f.top1 is None
    assert f.max_abs == pytest.approx(np.abs(a - b).max(), rel=1e-6)
    assert f.mean_abs == pytest.approx(np.abs(a - b).mean(), rel=1e-6)
    assert f.cosine == pytest.approx(cos.mean(), abs=1e-9)
    flat_ref, flat_got = [r.reshape(8, -1) for r in ref], [g.reshape(8, -1) for g in got]
    f = fidelity(flat_ref, flat_got, classifier=True)
    assert f.top1 == pytest.approx(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))


def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_starts(mlp_file, tmp_path, monkeypatch):
    """The run needs several float32 copies of the weights (ONNX export, quantized graphs, sessions): with less
    memory available than that, one line with the figures and exit 2, before any folder is made; the PyTorch-only
    variants need fewer copies and still run."""
    from dldoctor.api import compress as C
    from dldoctor.errors import InputSpecError
    from dldoctor.load import factory

    weights = sum(p.numel() for p in linear_heavy().parameters()) * 4
    monkeypatch.setattr(factory, "available_memory", lambda: int(weights * (C.COPIES_TORCH + 1)))
    with pytest.raises(InputSpecError, match=r"would need about .* GiB of memory \(6 float32 copies"):
        C.compress(str(mlp_file), out_dir=str(tmp_path / "a" / "o"), transforms=["onnx-int8-dynamic"], iters=2)
    assert not (tmp_path / "a").exists()
    r = C.compress(str(mlp_file), out_dir=str(tmp_path / "b"), transforms=["torch-fp16"], iters=2, warmup=1,
                   budget=0.3)
    assert r.compress.variants[0].status != "failed"
    monkeypatch.setattr(factory, "available_memory", lambda: 1 << 20)
    res = run(mlp_file, "-o", tmp_path / "c", "-t", "torch-fp16", *FAST)
    assert res.exit_code == 2 and "GiB of memory" in res.output and "Traceback" not in res.output
