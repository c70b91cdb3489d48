"""The timing harness (dldoctor/collect/timing.py): verdicts a busy machine cannot fake.

Lean on purpose (CI has 2 cores): tiny workloads and short budgets; the load tests start two busy-loop
processes and kill them in `finally`.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time

import pytest
import torch
from torch import nn

from dldoctor.collect import timing
from dldoctor.report.timing_types import ERROR, FASTER, SAME, SLOWER


def _spin() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


@contextlib.contextmanager
def busy_machine(n: int = 2):
    """Two busy-loop processes for the duration (killed, then joined, in finally)."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_spin, daemon=True) for _ in range(n)]
    try:
        for p in procs:
            p.start()
        time.sleep(0.2)
        yield
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _work(n: int):
    return lambda: sum(range(n))  # a C loop: its time is linear in n, its call overhead a few dozen ns


# -- statistics and verdicts (no timing) ------------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_median():
    xs = [1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.3, 1.0]
    assert timing.bootstrap_ci(xs, seed=3) == timing.bootstrap_ci(xs, seed=3)
    lo, hi = timing.bootstrap_ci(xs)
    assert lo <= sorted(xs)[len(xs) // 2] <= hi and min(xs) <= lo and hi <= max(xs)


@pytest.mark.parametrize("ratio,lo,hi,want", [(1.5, 1.2, 1.8, FASTER), (1.3, 1.05, 1.6, SAME), (0.8, 0.7, 0.9, SLOWER),
                                              (1.0, 0.9, 1.1, SAME), (0.96, 0.93, 0.97, SAME)])
def test_verdict_needs_the_whole_interval(ratio, lo, hi, want):
    verdict, reason = timing.judge(ratio, lo, hi, 30)
    assert verdict == want and reason and f"{lo:.2f}" in reason


def test_a_speedup_beyond_the_bound_is_a_measurement_error():
    verdict, reason = timing.judge(280.8, 250.0, 300.0, 30, bound=1.3, bound_why="BatchNorm layers take 23%")
    assert verdict == ERROR and "more than this change can give" in reason and "1.30×" in reason
    assert timing.judge(1.5, 1.2, 1.8, 4)[0] == SAME  # too few rounds for any verdict
    assert timing.amdahl_bound(0.25) == pytest.approx(4 / 3)


def test_busy_is_load_above_the_cores(monkeypatch):
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (timing.cores() + 2.0, 0.0, 0.0))
    info = timing.LoadWatch().done()
    assert info.busy and info.before > info.cores and "busy" in timing.load_note(info)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not timing.LoadWatch().done().busy and timing.load_note(timing.LoadWatch().done()) is None


# -- the harness on real calls -----------------------------------------------------------------------


def test_identity_under_load_is_no_measurable_difference():
    """The same callable twice, with two busy loops competing for the 2 cores: 'no measurable difference' in at
    least 19 of 20 runs (the old p50 pair measured what-ifs at 1000x under such load)."""
    x, w = torch.randn(32, 128), torch.randn(128, 128)

    def f():
        return x @ w

    verdicts = []
    with one_thread(), busy_machine():
        for _ in range(20):
            verdicts.append(timing.compare(f, f, budget=0.4, seed=len(verdicts)).verdict)
    assert verdicts.count(SAME) >= 19, verdicts


def test_a_variant_twice_as_fast_is_faster_with_2_in_its_interval():
    t = timing.compare(_work(40_000), _work(20_000), budget=1.0)
    assert t.verdict == FASTER, t
    assert t.ci_low <= 2.0 <= t.ci_high or abs(t.ratio - 2.0) < 0.05, t
    assert t.rounds >= timing.MIN_ROUNDS and t.baseline_s > t.variant_s > 0
    assert t.load is not None and t.load.cores == timing.cores()


def test_the_bound_turns_an_impossible_speedup_into_a_measurement_error():
    t = timing.compare(_work(40_000), _work(20_000), budget=0.5, bound=1.2, bound_why="a made-up 17% share")
    assert t.verdict == ERROR and "17%" in t.reason and t.bound == 1.2
    t = timing.compare(_work(40_000), _work(20_000), budget=0.5, floor_s=1.0)  # a floor above the baseline: ignored
    assert t.verdict == FASTER and t.bound is None


def test_fold_conv_bn_never_measures_beyond_its_amdahl_bound():
    from dldoctor.api.compress import AMDAHL_SLACK
    from dldoctor.transforms import catalog

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                          nn.LazyLinear(10)).eval()
    x = (torch.randn(1, 3, 16, 16),)
    model(*x)
    folded, _ = catalog.get("fold-conv-bn").build(model, x)
    with one_thread():
        share = timing.module_share(model, x, (nn.BatchNorm2d,))
        bound = timing.amdahl_bound(share) * AMDAHL_SLACK  # as compress judges it: the share is measured too
        with torch.inference_mode():
            t = timing.compare(lambda: model(*x), lambda: folded(*x), budget=1.0, bound=bound)
    assert 0 < share < 1 and t.bound == pytest.approx(bound)
    assert t.verdict != ERROR and t.ci_low <= bound, t


def test_whatifs_and_compress_under_load_recommend_nothing_inconclusive(tmp_path):
    """Two busy loops: whatever profile's what-ifs and compress recommend has its whole interval at or above 1.1×."""
    from dldoctor.api.compress import compress
    from dldoctor.collect.whatif import run_whatifs

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    with busy_machine():
        whatifs = run_whatifs(cnn, lambda n: (torch.randn(n, 3, 16, 16),), exclude=("torch_compile",), budget=0.3)
        rep = compress(cnn, out_dir=str(tmp_path / "out"), input_shapes=[[1, 3, 16, 16]], budget=0.3, held=8,
                       transforms=["fold-conv-bn", "onnx-optimized", "torch-bf16"])
    timed = [w.timing for w in whatifs if w.recommended] + \
        [v.timing for v in rep.compress.variants if v.status == "recommended"]
    assert all(t is not None and t.verdict == FASTER and t.ci_low >= 1.1 for t in timed), timed
    assert all(not w.recommended for w in whatifs if w.timing is not None and w.timing.ci_low < 1.1)
    res = rep.compress
    assert res.load is not None and all(v.timing is not None for v in res.variants if v.status != "failed")
    if res.load.busy:
        assert any("busy" in n for n in res.notes)


def test_same_run_ratio_agrees_with_torch_benchmark_timer():
    """Quiet-machine only (skipped when the 1-minute load average is above 1.5): the harness's speedup of a 192x192
    matmul over a 256x256 one (both on one thread) is within 10% of the ratio of torch.utils.benchmark.Timer's
    medians for the same two calls. Ratios, as the issue asks: the harness keeps each round's fastest call and the
    Timer a median, so their absolute times differ by design (12% here) while their ratios agree."""
    from torch.utils.benchmark import Timer

    if (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0) > 1.5:  # checked when it runs: the busy-loop
        pytest.skip("quiet machine only: the load average is above 1.5")  # tests just before leave load behind
    big, small = torch.randn(256, 256), torch.randn(192, 192)
    with one_thread():
        t = timing.compare(lambda: big @ big, lambda: small @ small, budget=2.0)
        ref = [Timer("a @ a", globals={"a": a}, num_threads=1).blocked_autorange(min_run_time=0.5).median
               for a in (big, small)]
    assert t.ratio == pytest.approx(ref[0] / ref[1], rel=0.10), (t.ratio, ref[0] / ref[1])


def test_prf001_fires_only_on_faster():
    from dldoctor.report.facts import Facts
    from dldoctor.report.profile_types import ProfileResult, WhatIf
    from dldoctor.report.timing_types import Timing
    from dldoctor.report.types import ModelInfo, Report
    from dldoctor.rules.catalog.profile import measured_speedup
    from dldoctor.rules.options import ProfileOptions

    def w(verdict, lo):
        return WhatIf(name="channels_last", p50=1e-3, baseline_p50=2e-3, speedup=2.0, rel_diff=0.0, tolerance=1e-3,
                      within_tolerance=True, timing=Timing(verdict=verdict, ratio=2.0, ci_low=lo, ci_high=3.0,
                                                           rounds=20))
    facts = Facts(report=Report(model=ModelInfo(path="m.pt", format="torch-module")),
                  profile=ProfileResult(whatifs=[w(SAME, 1.05), w(ERROR, 2.5), w(FASTER, 1.6)]))
    hits = list(measured_speedup(facts, ProfileOptions()))
    assert len(hits) == 1 and hits[0].evidence["ci_low"] == 1.6 and "95% interval 1.60–3.00×" in hits[0].message
