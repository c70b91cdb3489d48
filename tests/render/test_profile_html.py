"""The profile report as a self-contained HTML page: well-formed, offline, escaped, robust to missing data,
and (where chromium is installed) rendered by a real headless browser."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from dldoctor.report.profile_types import LatencyStats, OpTime, ProfileResult, WhatIf
from dldoctor.render.html.profile import render_profile_html
from dldoctor.report.types import Finding, ModelInfo, Report
from tests.render.test_probe_html import _check_page, _chromium, assert_a_real_page, screenshot

OPS = ("aten::convolution", "aten::addmm", "aten::batch_norm", "aten::relu_", "aten::max_pool2d", "aten::add_")
MODULES = ("layer1", "layer2", "layer3", "fc", "bn1")
WHATIFS = ("channels_last", "bf16_autocast", "inference_mode", "torch_compile", "threads", "onnxruntime",
           "fp16_autocast")


def _latency(b: int, p50: float, cv: float, seed: int) -> LatencyStats:
    rng = random.Random(seed)
    samples = sorted(p50 * (1 + rng.gauss(0, cv)) for _ in range(30))
    samples[-1] *= 1 + 1.5 * cv  # one slow straggler, as real runs have
    mean = sum(samples) / len(samples)
    std = (sum((s - mean) ** 2 for s in samples) / len(samples)) ** 0.5

    def q(p: float) -> float:
        return samples[min(len(samples) - 1, round(p * (len(samples) - 1)))]

    return LatencyStats(batch_size=b, iters=30, warmup=5, mean=mean, std=std, p50=q(0.5), p90=q(0.9), p99=q(0.99),
                        min=samples[0], max=samples[-1], cv=std / mean, noisy=std / mean > 0.1,
                        throughput=b / q(0.5), samples=samples, peak_memory=b * 12 << 20)


def _profile() -> ProfileResult:
    latency = [_latency(1, 4.1e-3, 0.03, 1), _latency(8, 18e-3, 0.15, 2), _latency(32, 69e-3, 0.04, 3)]
    op_shares = (0.52, 0.17, 0.12, 0.09, 0.06, 0.04)
    ops = [OpTime(name=n, kind="op", time=s * 4e-3, share=s, calls=c, flops=f,
                  flops_per_s=None if f is None else f / (s * 4e-3), bound=b)
           for n, s, c, f, b in zip(OPS, op_shares, (20, 1, 20, 17, 1, 8), (1_800_000_000, 1_024_000, 9_000_000,
                                                                            None, None, 2_000_000),
                                    ("compute", "compute", "memory", "memory", None, "memory"))]
    mod_shares = (0.31, 0.27, 0.22, 0.02, 0.08)
    modules = [OpTime(name=n, kind="module", time=s * 4e-3, share=s, calls=1, flops=f, flops_per_s=f / (s * 4e-3),
                      bound=b)
               for n, s, f, b in zip(MODULES, mod_shares, (610_000_000, 590_000_000, 120_000_000, 1_024_000,
                                                           9_000_000),
                                     ("compute", "compute", "memory", "compute", "memory"))]
    base = latency[0].p50

    def wi(name: str, speedup: float | None, rel: float | None = 1e-6, **kw) -> WhatIf:
        p50 = None if speedup is None else base / speedup
        within = None if rel is None else rel <= 1e-3
        rec = speedup is not None and speedup >= 1.1 and bool(within)
        return WhatIf(name=name, p50=p50, baseline_p50=base if speedup else None, speedup=speedup, rel_diff=rel,
                      max_abs_diff=None if rel is None else rel * 3, tolerance=1e-3, within_tolerance=within,
                      recommended=rec, **kw)

    whatifs = [wi("channels_last", 1.31),
               wi("bf16_autocast", 1.45, 8e-3, reason="outputs differ by 8.0e-03 relative, above the tolerance"),
               wi("inference_mode", 1.12),
               wi("torch_compile", None, None, applicable=False, reason="torch.compile needs a C++ compiler here"),
               wi("threads", 0.97, detail="threads=8", reason="slower than the baseline"),
               wi("onnxruntime", 1.04, 2e-6, reason="below the 1.1× threshold"),
               wi("fp16_autocast", 0.62, 4e-4, reason="fp16 matmuls are emulated on this CPU")]
    return ProfileResult(
        config={"device": "cpu", "dtype": "float32", "threads": 4, "warmup": 5, "iters": 30,
                "batch_sizes": [1, 8, 32], "runtime": "pytorch"},
        device_name="AMD EPYC 7B13 (4 threads)", latency=latency, best_batch_size=8, ops=ops, modules=modules,
        total_flops=1_830_000_000, achieved_flops_per_s=4.46e11, peak_flops_per_s=1.2e12, peak_bandwidth=3.1e10,
        whatifs=whatifs, overhead=1.07,
        notes=["batch 8 timings are noisy <cv 19%>: another process was busy", "FLOPs counted by dldoctor inspect"],
        seconds=12.4)


def _report(profile: ProfileResult | None = None, findings: list[Finding] | None = None) -> Report:
    if findings is None:
        findings = [
            Finding(code="PRF002", name="noisy-timings", severity="warning",
                    message="timings spread 19% around their mean at batch 8", evidence={"cv": {"8": 0.19}},
                    fix="re-run on a quiet machine with more --iters & --warmup"),
            Finding(code="PRF001", name="measured-speedup", severity="info",
                    message="channels_last measured 1.31× faster", evidence={"speedup": 1.31},
                    fix="model = model.to(memory_format=torch.channels_last)"),
        ]
    return Report(model=ModelInfo(path="m.pt", format="pytorch"), profile=_profile() if profile is None else profile,
                  findings=findings)


def _svg_text(page: str) -> str:
    """The visible text of every SVG on the page."""
    return re.sub(r"<(?!svg)[^>]*>", "", "".join(re.findall(r"<svg\b.*?</svg>", page, flags=re.S)))


def test_rich_page_is_well_formed_offline_and_complete() -> None:
    page = render_profile_html(_report().to_dict())
    _check_page(page)
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 8  # 3 histograms, 2 sweep curves, 2 breakdowns, what-if speedups
    for name in WHATIFS + OPS + MODULES + ("PRF001", "PRF002", "noisy-timings", "m.pt", "AMD EPYC 7B13"):
        assert name in page, name
    # the header: config, headline figures
    for text in ("float32", "pytorch", "[1, 8, 32]", "best batch size", "1.07×", "(37%)", "samples/s"):
        assert text in page, text
    # strings from the doc are escaped
    assert "&lt;cv 19%&gt;" in page and "<cv 19%>" not in page
    assert "--iters &amp; --warmup" in page
    # findings sorted by severity
    assert page.index("PRF002") < page.index("PRF001")
    # latency: p50/p90/p99 marked per batch size, one noisy batch size (panel and table)
    assert page.count('class="badge b-warning">noisy') == 2
    assert _svg_text(page).count("p99") == 3
    # sweep spans 32×: log x, best batch marked
    assert "batch size (log scale)" in page and "best batch 8" in page
    # breakdown coloured by bound, achieved FLOP/s beside the bars
    assert "#f58518" in page and "#4c78a8" in page and "FLOP/s" in _svg_text(page)
    # what-ifs: 2 recommended, 1 not applicable, the rest tried; the threshold line
    assert page.count("✓ recommended") == 2
    assert page.count('b-muted">not applicable') == 1
    assert page.count("tried, did not help") == 4
    assert "torch.compile needs a C++ compiler here" in page and "threshold 1.1×" in page
    assert len(page) < 400_000


def test_empty_profile_says_not_measured() -> None:
    page = render_profile_html(_report(profile=ProfileResult(), findings=[]).to_dict())
    _check_page(page)
    assert "no findings" in page
    for text in ("latency not measured", "batch-size sweep not measured", "operators not measured",
                 "modules not measured", "what-ifs not measured", "profile config not measured"):
        assert text in page, text
    assert "<svg" not in page  # nothing to draw, so nothing drawn


def test_all_none_latency_is_not_drawn_as_zero() -> None:
    prof = _profile()
    prof.latency = [LatencyStats(batch_size=b) for b in (1, 8, 32)]
    prof.latency[2].error = "CUDA out of memory"
    prof.best_batch_size = prof.achieved_flops_per_s = prof.peak_flops_per_s = prof.overhead = None
    for w in prof.whatifs:
        w.speedup = w.p50 = w.baseline_p50 = w.rel_diff = None
        w.recommended = False
    prof.ops[0].share = None
    page = render_profile_html(_report(profile=prof).to_dict())
    _check_page(page)
    assert "samples not measured" in page and "CUDA out of memory" in page
    assert "throughput not measured" in page and "latency not measured" in page
    assert "speedups not measured" in page
    assert page.count('<span class="na">not measured</span>') > 20
    assert ">0<" not in _svg_text(page)  # nothing was drawn as a zero


def test_no_profile_and_malformed_values_do_not_crash() -> None:
    assert "profile not measured" in render_profile_html(_report().to_dict() | {"profile": None})
    _check_page(render_profile_html({}))
    doc = _report().to_dict()
    prof = doc["profile"]
    prof["latency"][0]["samples"] = [float("nan"), None, "x"]
    prof["latency"][1]["batch_size"] = None
    prof["ops"][0] = {"name": "<b>op</b>"}
    prof["whatifs"][0]["speedup"] = float("inf")
    prof["config"] = None
    doc["model"] = {"path": "<script>alert(1)</script>", "format": "pytorch"}
    page = render_profile_html(doc)
    _check_page(page)
    assert "<script>" not in page and "<b>op</b>" not in page


def test_headless_chromium_screenshot(tmp_path: Path) -> None:
    if _chromium() is None:
        pytest.skip("chromium not installed")
    shot = tmp_path / "profile.png"
    screenshot(render_profile_html(_report().to_dict()), shot)
    assert_a_real_page(shot)


def test_onnx_nodes_show_their_provider() -> None:
    prof = _profile()
    prof.config["runtime"] = "onnxruntime"
    prof.modules = [OpTime(name="/layer1/Conv", kind="node", time=1e-3, share=0.6, calls=1, bound="compute",
                           provider="CUDAExecutionProvider"),
                    OpTime(name="/fc/Gemm", kind="node", time=2e-4, share=0.1, calls=1,
                           provider="CPUExecutionProvider")]
    page = render_profile_html(_report(profile=prof).to_dict())
    _check_page(page)
    assert "Per node (ONNX)" in page
    assert "60.0% · CUDAExecutionProvider" in _svg_text(page) and "CPUExecutionProvider" in page


def test_whatif_chart_labels_are_the_whole_names() -> None:
    """The what-if chart labels each bar with the what-if's name, whole; the long detail (what was changed, on how
    many threads) stays in the table and the tooltip instead of being cut to fit the label margin."""
    import re

    from dldoctor.report.profile_types import WhatIf

    w = WhatIf(name="bf16_autocast", detail="torch.autocast('cpu', dtype=torch.bfloat16); both sides on 1 thread "
               "(busy machine)", p50=0.001, baseline_p50=0.002, speedup=2.0, rel_diff=1e-3, tolerance=1e-2,
               within_tolerance=True, recommended=True)
    page = render_profile_html(_report(profile=ProfileResult(whatifs=[w])).to_dict())
    chart = page[page.index("Speedup per what-if"):]
    labels = re.findall(r'text-anchor="end"[^>]*>([^<]*)<', chart)
    assert "bf16_autocast" in labels, labels
    assert not any("…" in lab for lab in labels), labels
