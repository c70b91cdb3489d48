"""The measurement core of `dldoctor profile` (dldoctor.collect.profile): real timings, kept fast."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from dldoctor.collect import profile as prof
from dldoctor.collect.profile import latency_stats, measure_onnx, measure_torch, peak_bandwidth, peak_flops, time_fn
from dldoctor.report.profile_types import LatencyStats

FAST = {"warmup": 2, "iters": 10}


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom: this model cannot run\nsecond line")


def cnn_input(b: int) -> tuple[torch.Tensor]:
    return (torch.randn(b, 3, 32, 32),)


@pytest.fixture(scope="module")
def cnn_result():
    torch.manual_seed(0)
    return measure_torch(SmallCNN(), cnn_input, batch_sizes=(1, 4), **FAST)


def test_time_fn_and_stats_against_a_sleep():
    samples = time_fn(lambda: time.sleep(0.002), warmup=1, iters=15)
    assert len(samples) == 15
    s = latency_stats(samples, 3, warmup=1)
    assert 0.002 <= s.p50 <= 0.006
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    assert s.throughput == pytest.approx(3 / s.p50)
    assert s.cv == pytest.approx(s.std / s.mean)
    assert s.iters == 15 and s.samples == samples


def test_percentiles_interpolate_linearly():
    s = latency_stats([4.0, 1.0, 3.0, 2.0, 5.0], 1)
    assert (s.min, s.p50, s.max) == (1.0, 3.0, 5.0)
    assert s.p90 == pytest.approx(4.6) and s.p99 == pytest.approx(4.96)
    assert s.mean == 3.0 and s.std == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))


def test_best_batch_is_the_smallest_within_five_percent():
    def at(b: int, tput: float) -> LatencyStats:
        return LatencyStats(batch_size=b, throughput=tput, p50=b / tput)

    assert prof._best_batch([at(1, 100), at(8, 800), at(16, 820), at(32, 830)]) == 8
    assert prof._best_batch([at(1, 100), LatencyStats(batch_size=64, error="OOM")]) == 1
    assert prof._best_batch([LatencyStats(batch_size=1, error="x")]) is None


def test_measure_torch_latency(cnn_result):
    r = cnn_result
    assert r.error is None
    assert [s.batch_size for s in r.latency] == [1, 4]
    for s in r.latency:
        assert s.error is None and s.iters == FAST["iters"] and len(s.samples) == s.iters
        assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
        assert s.throughput == pytest.approx(s.batch_size / s.p50)
        assert s.noisy == (s.cv > 0.1)
    assert r.best_batch_size in {1, 4}
    assert r.config["batch_sizes"] == [1, 4] and r.device_name
    noisy = [s for s in r.latency if s.noisy]
    assert all(any(f"at batch {s.batch_size}" in n for n in r.notes) for s in noisy)


def test_measure_torch_breakdown(cnn_result):
    r = cnn_result
    assert r.ops and all(o.kind == "op" and 0 < o.share <= 1 for o in r.ops)
    assert sum(o.share for o in r.ops) <= 1.0 + 1e-6
    assert any("conv" in o.name for o in r.ops)
    mods = {o.name: o for o in r.modules}
    assert {"features.0", "features.3"} <= set(mods)
    assert sum(o.share for o in r.modules) <= 1.0 + 1e-6
    # first conv at the profiled (largest) batch 4: 2 * Cout * Cin * k^2 * H * W * batch
    assert mods["features.0"].flops == 2 * 8 * 3 * 3 * 3 * 32 * 32 * 4
    assert mods["features.3"].flops == 2 * 16 * 8 * 3 * 3 * 32 * 32 * 4
    assert mods["features.0"].flops_per_s == pytest.approx(mods["features.0"].flops / mods["features.0"].time)
    assert all(o.bound in {"compute", "memory", None} for o in r.modules)
    assert mods["features.2"].bound is None  # a ReLU: no FLOPs counted
    assert r.total_flops and r.total_flops >= mods["features.0"].flops + mods["features.3"].flops
    assert r.achieved_flops_per_s == pytest.approx(r.total_flops / r.at(4).p50)
    assert r.peak_flops_per_s > 0 and r.peak_bandwidth > 0
    assert r.overhead is not None and r.overhead > 0


def _hooks(m: nn.Module) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())


def test_caller_model_untouched():
    torch.manual_seed(1)
    model = SmallCNN().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    r = measure_torch(model, cnn_input, batch_sizes=(2,), threads=1, warmup=1, iters=3)
    assert r.error is None and r.config["threads"] == 1
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _hooks(model) == 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


def test_failing_model_is_a_result_not_an_exception():
    model = Broken()
    rng = torch.get_rng_state()
    r = measure_torch(model, lambda b: (torch.randn(b, 4),), batch_sizes=(1, 2), warmup=1, iters=2)
    assert r.error == "RuntimeError: boom: this model cannot run"
    assert all(s.error for s in r.latency) and r.best_batch_size is None and not r.ops
    assert torch.equal(torch.get_rng_state(), rng)


class FailsAtFour(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 4:
            raise torch.OutOfMemoryError("pretend the device is full")
        return self.fc(x)


def test_a_failing_batch_size_does_not_stop_the_sweep():
    r = measure_torch(FailsAtFour(), lambda b: (torch.randn(b, 4),), batch_sizes=(1, 4, 2), warmup=1, iters=3)
    assert r.error is None
    assert [s.error is None for s in r.latency] == [True, False, True]
    assert "pretend the device is full" in r.at(4).error and r.at(4).p50 is None
    assert r.best_batch_size in {1, 2}
    assert any("breakdown at batch 2" in n for n in r.notes)
    assert [o.name for o in r.modules] == ["fc"] and r.modules[0].flops == 2 * 4 * 4 * 2



class NotOnMeta(nn.Module):
    """`.item()` has no value on the meta device: FLOPs are counted on the real one."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * (1.0 if x.abs().sum().item() >= 0 else 2.0)


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(8, 4)), NotOnMeta()], ids=["meta", "real-device"])
def test_flops_come_from_the_counting_pass_not_a_whole_inspect(model, monkeypatch):
    """profile counts its FLOPs with collect.trace's pass (meta, else the real device), as inspect does,
    without running the top-level inspector (collect/ sits below it)."""
    import dldoctor.api.inspect

    def whole_inspect(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("profile ran a whole inspect to count FLOPs")

    monkeypatch.setattr(dldoctor.api.inspect, "inspect", whole_inspect)
    monkeypatch.setattr(dldoctor.api.inspect, "inspect_loaded", whole_inspect)
    r = measure_torch(model, lambda b: (torch.randn(b, 8),), batch_sizes=(3,), warmup=1, iters=2)
    assert r.error is None
    leaf = [o for o in r.modules if o.name in ("0", "fc")]
    assert len(leaf) == 1 and leaf[0].flops == 2 * 3 * 8 * 4
    assert r.total_flops == 2 * 3 * 8 * 4

def test_min_time_raises_iters():
    r = measure_torch(nn.Linear(8, 8), lambda b: (torch.randn(b, 8),), warmup=1, iters=2, min_time=0.02,
                      breakdown=False)
    s = r.latency[0]
    assert s.error is None and s.iters > 2 and sum(s.samples) >= 0.02 and len(s.samples) == s.iters


def test_fp16_on_cpu_is_flagged():
    r = measure_torch(nn.Linear(8, 8), lambda b: (torch.randn(b, 8),), dtype="fp16", warmup=1, iters=2,
                      breakdown=False)
    assert any("fp16 on CPU" in n for n in r.notes)
    assert r.config["dtype"] == "fp16"


def test_measure_onnx(tmp_path, monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    traces = []
    real = prof._ort_trace

    def spy(p, skip):
        traces.append(p)
        return real(p, skip)

    monkeypatch.setattr(prof, "_ort_trace", spy)
    r = measure_onnx(path, batch_sizes=(1, 2), providers=["CPUExecutionProvider"], **FAST)
    assert r.error is None
    assert [s.batch_size for s in r.latency] == [1, 2] and all(s.p50 > 0 for s in r.latency)
    assert any(o.name == "Conv" and o.kind == "op" and o.provider == "CPUExecutionProvider" for o in r.ops)
    assert r.modules and all(o.kind == "node" for o in r.modules)
    assert sum(o.share for o in r.ops) <= 1.0 + 1e-6
    assert traces and not any(os.path.exists(p) for p in traces)
    assert not list(tmp_path.glob("*.json")) and not list(Path().glob("onnxruntime_profile*.json"))

    feeds = measure_onnx(path.read_bytes(), lambda b: {"x": np.zeros((b, 3, 16, 16), np.float32)},
                         batch_sizes=(3,), warmup=1, iters=3, threads=1, providers=["CPUExecutionProvider"])
    assert feeds.error is None and feeds.latency[0].p50 > 0


def test_measure_onnx_fixed_batch_is_recorded_per_batch(tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(nn.Linear(4, 2).eval(), (torch.randn(1, 4),), str(path), dynamo=False)
    r = measure_onnx(path, batch_sizes=(1, 2), warmup=1, iters=3, providers=["CPUExecutionProvider"])
    assert r.error is None and r.latency[0].error is None
    assert "fixed at 1" in r.latency[1].error


def test_machine_peaks():
    assert peak_flops(seconds=0.1) > 1e8
    assert peak_bandwidth(seconds=0.1) > 1e8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_torch_cuda_fp16():
    r = measure_torch(SmallCNN(), cnn_input, device="cuda", dtype="fp16", batch_sizes=(1, 8), **FAST)
    assert r.error is None, r.error
    assert all(s.error is None and s.peak_memory and s.reserved_memory for s in r.latency)
    assert r.ops and sum(o.share for o in r.ops) <= 1.0 + 1e-6
    assert {"features.0", "features.3"} <= {o.name for o in r.modules}


def test_a_peak_below_what_the_model_reached_is_not_used():
    """A peak FLOP/s measured while other processes held the cores can come out below what the model itself
    achieved (the run showed 446% of peak): then no share of peak and no roofline bounds, and a note says why."""
    from dldoctor.report.profile_types import LatencyStats, ProfileResult

    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    res = ProfileResult(peak_flops_per_s=1.0, peak_bandwidth=1e9)  # 1 FLOP/s: below anything a forward reaches
    prof._attach_flops(res, m, (torch.randn(4, 64),), LatencyStats(batch_size=4, p50=1e-3), "cpu", torch.float32)
    assert res.achieved_flops_per_s and res.achieved_flops_per_s > 1.0
    assert res.peak_flops_per_s is None and any("below what the model itself reached" in n for n in res.notes)
    assert all(o.bound is None for o in res.modules)
