"""The measured what-ifs of `dldoctor profile` (dldoctor.collect.whatif.run_whatifs)."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from dldoctor.collect import whatif
from dldoctor.collect.whatif import run_whatifs
from dldoctor.report.profile_types import WhatIf

FAST = dict(budget=0.3)  # seconds per comparison: the harness decides warm-up and rounds
NO_COMPILE = ("torch_compile",)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _img(n: int) -> tuple:
    return (torch.randn(n, 3, 16, 16),)


def _vec(n: int) -> tuple:
    return (torch.randn(n, 16),)


def _by_name(results: list[WhatIf]) -> dict[str, WhatIf]:
    return {w.name: w for w in results}


@pytest.fixture(scope="module")
def cnn_results() -> dict[str, WhatIf]:
    return _by_name(run_whatifs(_cnn(), _img, exclude=NO_COMPILE, **FAST))


def test_cnn_names_and_channels_last(cnn_results):
    assert set(cnn_results) == {"channels_last", "bf16_autocast", "inference_mode", "threads", "onnxruntime", "batch"}
    assert all(isinstance(w, WhatIf) for w in cnn_results.values())
    cl = cnn_results["channels_last"]
    assert cl.applicable and cl.p50 > 0 and cl.baseline_p50 > 0 and cl.speedup > 0
    bf16 = cnn_results["bf16_autocast"]
    if bf16.applicable:  # reduced precision: the looser tolerance
        assert bf16.tolerance == pytest.approx(5e-2) and bf16.rel_diff is not None
    else:
        assert bf16.reason
    assert cnn_results["threads"].detail.startswith("threads=") or not cnn_results["threads"].applicable


def test_output_differences_are_measured(cnn_results):
    for name in ("inference_mode", "channels_last", "onnxruntime"):
        w = cnn_results[name]
        assert w.applicable, (name, w.reason)
        assert w.rel_diff is not None and w.rel_diff < 1e-4, (name, w.rel_diff)
        assert w.max_abs_diff is not None and w.tolerance == pytest.approx(1e-3)
        assert w.within_tolerance is True


def test_a_real_difference_is_caught():
    class GradModeDependent(nn.Module):  # doubles its output under inference_mode: a difference that must show
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 4)

        def forward(self, x):
            y = self.lin(x)
            return y * 2 if torch.is_inference_mode_enabled() else y

    torch.manual_seed(0)
    w = _by_name(run_whatifs(GradModeDependent(), _vec, include=["inference_mode"], **FAST))["inference_mode"]
    assert w.applicable and w.rel_diff == pytest.approx(1.0, rel=1e-6) and w.within_tolerance is False
    assert not w.recommended and "outputs differ by 1 relative, above 0.001" in w.reason


def test_mlp_channels_last_not_applicable():
    w = _by_name(run_whatifs(_mlp(), _vec, include=["channels_last"], **FAST))["channels_last"]
    assert not w.applicable and "Conv2d" in w.reason and not w.recommended and w.speedup is None


def test_broken_experiment_does_not_raise(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("export exploded\nsecond line of the message")

    monkeypatch.setattr(torch.onnx, "export", broken)
    res = _by_name(run_whatifs(_mlp(), _vec, include=["inference_mode", "onnxruntime"], **FAST))
    assert not res["onnxruntime"].applicable and "export exploded" in res["onnxruntime"].reason
    assert "second line" not in res["onnxruntime"].reason
    assert res["inference_mode"].applicable  # the others still run


def test_broken_model_does_not_raise():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("shape trouble")

    res = run_whatifs(Broken(), _vec, exclude=NO_COMPILE, **FAST)
    assert res and all(not w.applicable and "shape trouble" in w.reason for w in res)


@pytest.mark.parametrize("threshold", [1.1, 1000.0])
def test_recommended_is_speedup_and_tolerance(threshold):
    # Under load a single p50 pair once measured a what-if at >= 1000x; now a recommendation needs the
    # harness's verdict "faster": the whole 95% interval of the interleaved rounds at or above the threshold.
    res = run_whatifs(_cnn(), _img, exclude=NO_COMPILE, threshold=threshold, **FAST)
    for w in res:
        if not w.applicable:
            continue
        t = w.timing
        assert t is not None and t.rounds >= 3 and t.ci_low <= t.ratio <= t.ci_high
        assert w.speedup == t.ratio and w.p50 == t.variant_s and w.baseline_p50 == t.baseline_s
        assert w.recommended == bool(t.verdict == "faster" and w.within_tolerance is True), w
        if t.verdict == "faster":
            assert t.ci_low >= threshold
        if not w.recommended:
            assert w.reason
    if threshold == 1000.0:  # nothing here can be 1000x faster: a median that high is a measurement error
        assert not any(w.recommended for w in res)
        assert all(w.timing.verdict != "faster" for w in res if w.applicable)


def test_tolerance_argument_and_include_exclude():
    res = run_whatifs(_mlp(), _vec, include=["inference_mode", "batch", "threads"], exclude=["threads"],
                      tolerance=0.5, **FAST)
    assert [w.name for w in res] == ["inference_mode", "batch"]
    assert all(w.tolerance == 0.5 for w in res)
    with pytest.raises(ValueError):
        run_whatifs(_mlp(), _vec, include=["no_such_thing"])


def test_custom_timer_is_used():
    calls = []

    def timer(fn):  # the baseline (the first function timed) takes 2 ms, every change 1 ms
        fn()
        calls.append(fn)
        return 2e-3 if fn is calls[0] else 1e-3

    res = run_whatifs(_mlp(), _vec, include=["inference_mode", "onnxruntime"], timer=timer, bounds=False)
    assert calls[1] is not calls[0] and calls[2] is calls[1] and calls[3] is calls[0]  # A B, B A, ...
    assert all(w.p50 == 1e-3 and w.baseline_p50 == 2e-3 and w.speedup == 2.0 for w in res)
    assert all(w.timing.verdict == "faster" and w.timing.ci_low == w.timing.ci_high == 2.0 for w in res)
    assert all(w.recommended and w.reason is None for w in res)


def test_callers_module_untouched():
    model = _cnn()
    model.train()
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    run_whatifs(model, _img, exclude=NO_COMPILE, **FAST)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in params.items())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)
    assert next(model.parameters()).is_contiguous()  # channels_last went to a copy


def test_threads_restored_when_the_experiment_fails(monkeypatch):
    threads = torch.get_num_threads()
    real = whatif._snapshot
    state = {"n": 0}

    def failing(out):  # the baseline snapshot passes, the one inside the threads experiment fails
        state["n"] += 1
        if state["n"] > 1:
            raise RuntimeError("snapshot failed")
        return real(out)

    monkeypatch.setattr(whatif, "_snapshot", failing)
    monkeypatch.setattr(whatif.os, "cpu_count", lambda: 3 if threads != 3 else 4)
    monkeypatch.setattr(whatif.timing, "busy", lambda: False)  # a busy machine skips the thread-count what-if
    (w,) = run_whatifs(_mlp(), _vec, include=["threads"], **FAST)
    assert not w.applicable and "snapshot failed" in w.reason
    assert torch.get_num_threads() == threads


def test_batch_is_per_sample():
    # One intra-op thread: on a loaded 2-core machine a two-thread batch-4 forward can wait a whole
    # scheduler slice at the barrier (a steady 16 ms), which would measure the neighbours, not batching.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (w,) = run_whatifs(_mlp(), _vec, include=["batch"], batch_size=1, budget=1.0)
    finally:
        torch.set_num_threads(threads)
    assert w.applicable and w.per_sample and w.speedup > 1  # the per-sample time falls from batch 1 to 4
    assert w.detail.startswith("batch 4") and w.within_tolerance is True and w.rel_diff < 1e-5


def test_batch_catches_cross_sample_mixing():
    class Centred(nn.Module):  # subtracts the batch mean: sample 0's output depends on the others
        def forward(self, x):
            return x - x.mean(0, keepdim=True)

    (w,) = run_whatifs(Centred(), lambda n: (torch.randn(n, 8),), include=["batch"], batch_size=2, **FAST)
    assert w.applicable and w.within_tolerance is False and not w.recommended


def test_torch_compile_tiny_mlp():
    t0 = time.perf_counter()
    (late,) = run_whatifs(_mlp(), _vec, include=["torch_compile"], compile_timeout=1e-3, **FAST)
    assert not late.applicable and "limit" in late.reason
    (w,) = run_whatifs(_mlp(), _vec, include=["torch_compile"], **FAST)
    if not w.applicable:  # no C++ compiler, unsupported Python ...: a reason, never an exception
        assert w.reason
        return
    assert "compile" in w.detail and w.rel_diff is not None and w.rel_diff < 1e-4 and w.p50 > 0
    assert time.perf_counter() - t0 < 120


def test_a_busy_machine_runs_both_sides_on_one_thread(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(whatif.timing, "busy", lambda: True)
    seen = []
    res = _by_name(run_whatifs(_mlp(), _vec, include=["threads", "inference_mode"], bounds=False,
                               timer=lambda fn: (seen.append(torch.get_num_threads()), fn(), 1e-3)[2]))
    assert not res["threads"].applicable and "busy" in res["threads"].reason
    assert "1 thread (busy machine)" in res["inference_mode"].detail and set(seen) == {1}
    assert torch.get_num_threads() == threads
