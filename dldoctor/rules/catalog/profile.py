"""Measured speed: what `dldoctor profile` timed, and the changes it tried for real.

Every finding here is backed by a measurement taken in the same run (see
dldoctor/report/profile_types.py): a what-if is recommended only when it was run, the timing harness
measured it "faster" (the whole 95% interval of its speedup at or above the threshold), and its outputs
stayed within tolerance of the original.
"""
from __future__ import annotations

from typing import Iterator

from dldoctor.report.facts import Facts
from dldoctor.rules.options import ProfileOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import ARCHITECTURE, HANDBOOK, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   ARCHITECTURE: efficiency: quantization, compression, choosing models for the hardware
#   HANDBOOK: mixed precision, batch size and memory, efficient architectures
#   TRANSFORMERS: efficient inference; compression; hardware-aware choices

_HOW = {
    "channels_last": "model = model.to(memory_format=torch.channels_last); x = x.to(memory_format=torch.channels_last)",
    "bf16_autocast": "with torch.autocast(device_type, dtype=torch.bfloat16): y = model(x)",
    "fp16_autocast": "with torch.autocast('cuda', dtype=torch.float16): y = model(x)",
    "inference_mode": "with torch.inference_mode(): y = model(x)",
    "torch_compile": "model = torch.compile(model)",
    "threads": "torch.set_num_threads(N) (see detail)",
    "onnxruntime": "export with torch.onnx.export and serve with onnxruntime.InferenceSession",
    "batch": "serve requests in larger batches",
}


@rule(code="PRF001", name="measured-speedup", family="profile", severity=Severity.INFO, needs=("profile",),
      source=(HANDBOOK, TRANSFORMERS))
def measured_speedup(facts: Facts, opts: ProfileOptions) -> Iterator[Hit]:
    """## What it does
    Reports each change `dldoctor profile` tried on the model (channels_last, bf16/fp16 autocast,
    inference_mode, torch.compile, thread count, ONNX Runtime, a larger batch) that the timing harness
    measured "faster": timed against the original in interleaved rounds, the whole 95% interval of its
    median speedup at or above 1.1× (configurable), with outputs within tolerance of the original; the
    speedup, its interval and the output difference are the evidence. Changes that were tried and did
    not help, or whose interval includes the threshold, are listed in the profile with their interval,
    not here.

    ## Why is this bad?
    It is not: it is free speed, measured on this model and this machine, not guessed from a
    rule of thumb that may not hold for it.

    ## Example
    ```python
    y = model(x)  # fp32, NCHW, autograd bookkeeping on
    ```

    ## Use instead
    ```python
    model = model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = model(x.to(memory_format=torch.channels_last))
    ```

    ## Options
    - `profile.min-speedup`: the lower end of the 95% interval from which a change is recommended (default 1.1)
    """
    prof = facts.profile
    for w in sorted(prof.whatifs, key=lambda w: -(w.speedup or 0)):
        if not w.applicable or not w.within_tolerance or w.speedup is None:
            continue
        t = w.timing
        if t is not None:  # the harness's verdict: the whole interval clears the threshold
            if t.verdict != "faster" or t.ci_low is None or t.ci_low < opts.min_speedup:
                continue
        elif w.speedup < opts.min_speedup:  # a report from before the harness: its single ratio
            continue
        what = f"{w.name}" + (f" ({w.detail})" if w.detail else "")
        diff = "n/a" if w.rel_diff is None else f"{w.rel_diff:.1e}"
        ci = f", 95% interval {t.ci_low:.2f}–{t.ci_high:.2f}× over {t.rounds} rounds" if t is not None else ""
        yield Hit(f"{what} measured {w.speedup:.2f}× faster{' per sample' if w.per_sample else ''}{ci} "
                  f"({(w.baseline_p50 or 0) * 1e3:.3g} → {(w.p50 or 0) * 1e3:.3g} ms), outputs within {diff} relative",
                  location=None,
                  evidence={"whatif": w.name, "detail": w.detail, "speedup": w.speedup, "p50_s": w.p50,
                            "baseline_p50_s": w.baseline_p50, "rel_diff": w.rel_diff, "tolerance": w.tolerance,
                            "ci_low": t.ci_low if t else None, "ci_high": t.ci_high if t else None,
                            "rounds": t.rounds if t else None, "verdict": t.verdict if t else None},
                  fix=_HOW.get(w.name, w.name))


@rule(code="PRF002", name="noisy-timings", family="profile", severity=Severity.WARNING, needs=("profile",),
      source=(TRANSFORMERS,))
def noisy_timings(facts: Facts, opts: ProfileOptions) -> Iterator[Hit]:
    """## What it does
    Reports batch sizes whose timed runs spread more than 10% (coefficient of variation,
    configurable) around their mean.

    ## Why is this bad?
    A latency figure with that much spread cannot back a budget or a recommendation: another
    process, frequency scaling or a cold cache moved the numbers, and a 10% regression or gain
    would be lost in the noise.

    ## Example
    ```
    dldoctor profile model.pt --iters 10     # on a laptop running a browser
    ```

    ## Use instead
    ```
    dldoctor profile model.pt --iters 200 --warmup 20 --threads 4   # on a quiet machine, threads pinned
    ```

    ## Options
    - `profile.max-cv`: coefficient of variation above which timings are noisy (default 0.1)
    """
    prof = facts.profile
    noisy = [s for s in prof.latency if s.cv is not None and s.cv > opts.max_cv]
    if noisy:
        worst = max(noisy, key=lambda s: s.cv)
        yield Hit(f"timings spread {worst.cv:.0%} around their mean at batch {worst.batch_size} "
                  f"({len(noisy)} of {len(prof.latency)} batch sizes above {opts.max_cv:.0%}): treat them with care",
                  evidence={"cv": {str(s.batch_size): s.cv for s in noisy}, "threshold": opts.max_cv,
                            "iters": worst.iters},
                  fix="re-run on a quiet machine with more --iters and --warmup, and a fixed --threads")


@rule(code="PRF003", name="batching-pays", family="profile", severity=Severity.INFO, needs=("profile",),
      source=(HANDBOOK,))
def batching_pays(facts: Facts, opts: ProfileOptions) -> Iterator[Hit]:
    """## What it does
    From the batch-size sweep, reports how much per-sample throughput grows from the smallest to the
    best batch size, and the batch size where it stops improving, when the gain is at least 1.5×
    (configurable).

    ## Why is this bad?
    Serving one sample at a time leaves the hardware idle between small kernels; the sweep shows how
    much a batching server would gain on this model, and where batching stops paying.

    ## Example
    ```
    for x in requests: model(x)            # batch 1
    ```

    ## Use instead
    ```
    model(torch.cat(requests[:16]))        # batch up to the measured knee
    ```

    ## Options
    - `profile.batch-gain`: throughput gain that makes batching worth reporting (default 1.5)
    """
    prof = facts.profile
    ok = [s for s in prof.latency if s.throughput]
    if len(ok) < 2:
        return
    first = min(ok, key=lambda s: s.batch_size)
    best = max(ok, key=lambda s: s.throughput)
    gain = best.throughput / first.throughput
    if gain >= opts.batch_gain:
        knee = prof.best_batch_size or best.batch_size
        yield Hit(f"throughput grows {gain:.1f}× from batch {first.batch_size} ({first.throughput:.3g}/s) to batch "
                  f"{best.batch_size} ({best.throughput:.3g}/s); it stops improving at batch {knee}",
                  evidence={"gain": gain, "knee": knee,
                            "throughput": {str(s.batch_size): s.throughput for s in ok}},
                  fix=f"batch requests up to about {knee} samples when serving")


@rule(code="PRF004", name="memory-bound-hotspots", family="profile", severity=Severity.INFO, needs=("profile",),
      source=(TRANSFORMERS, ARCHITECTURE))
def memory_bound_hotspots(facts: Facts, opts: ProfileOptions) -> Iterator[Hit]:
    """## What it does
    Adds up the time of the layers the profile labelled memory-bound (their arithmetic intensity,
    FLOPs per byte moved, is below the machine's measured ridge point) and reports them when they
    take at least 30% (configurable) of the forward pass.

    ## Why is this bad?
    A memory-bound layer waits on memory, not arithmetic: fewer FLOPs will not make it faster, but
    fewer bytes will (fusing elementwise layers into the conv before them, channels_last, lower
    precision, larger batches for weight-heavy layers).

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU())   # three passes over the map
    ```

    ## Use instead
    ```python
    torch.ao.quantization.fuse_modules(model.eval(), [["0", "1", "2"]])   # one pass (or torch.compile)
    ```

    ## Options
    - `profile.memory-bound-share`: share of the time in memory-bound layers worth reporting (default 0.3)
    """
    prof = facts.profile
    mem = [m for m in prof.modules if m.bound == "memory"]
    share = sum(m.share for m in mem)
    if mem and share >= opts.memory_bound_share:
        top = sorted(mem, key=lambda m: -m.share)[:5]
        yield Hit(f"{share:.0%} of the forward time is in {len(mem)} memory-bound layers (e.g. "
                  f"{', '.join(f'{m.name} {m.share:.0%}' for m in top[:3])})",
                  location=top[0].name,
                  evidence={"share": share, "layers": {m.name: m.share for m in top},
                            "peak_flops_per_s": prof.peak_flops_per_s, "peak_bandwidth": prof.peak_bandwidth},
                  fix="cut bytes, not FLOPs: fuse conv+BN+activation (torch.compile or fuse_modules), use "
                      "channels_last, run in bf16/fp16")
