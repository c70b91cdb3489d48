"""`dldoctor profile`: its p50 against an independent timer, its own overhead, and the what-if table.

1. dldoctor's reported p50 against `torch.utils.benchmark.Timer` (blocked_autorange median) of
   the same model and input in the same process. The issue's bar: within 10%.
2. The profiler's overhead: a `torch.profiler`-instrumented run against a plain one (what the
   per-op breakdown costs), as `ProfileResult.overhead` reports it.
3. The measured what-ifs for a ResNet, a MobileNet and a small transformer.

    python benchmarks/profile_bench.py [--out docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def models():
    from torchvision.models import mobilenet_v3_small, resnet18

    from tests.fixtures.probe_cases import TinyTransformer

    torch.manual_seed(0)
    yield "resnet18 (1×3×224×224)", resnet18(), [1, 3, 224, 224], "float32"
    yield "mobilenet_v3_small (1×3×224×224)", mobilenet_v3_small(), [1, 3, 224, 224], "float32"
    yield "transformer 2×d32 (1×64 tokens)", TinyTransformer(), [1, 64], "int64"


def timer_p50(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.benchmark import Timer

    m = model.eval()
    with torch.inference_mode():
        t = Timer("m(x)", globals={"m": m, "x": x}, num_threads=torch.get_num_threads())
        return t.blocked_autorange(min_run_time=1.0).median


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import dldoctor
    from dldoctor.collect.inputs import make_inputs

    rows, whatifs = [], []
    for name, model, shape, dt in models():
        x = make_inputs(model, [shape], dt)[0][0]
        # the timing comparison first, with no what-ifs in the process yet (torch.compile leaves
        # compile workers behind that load the machine for a while)
        ref = timer_p50(model, x)
        prof = dldoctor.profile(model, input_shapes=[shape], input_dtype=dt, warmup=10, iters=200,
                                whatifs=False).profile
        s = prof.at(1)
        ref2 = timer_p50(model, x)  # again after: the machine's drift during the run shows here
        rows.append((name, s.p50, ref, ref2, s.cv, prof.overhead))
    for name, model, shape, dt in models():
        prof = dldoctor.profile(model, input_shapes=[shape], input_dtype=dt, warmup=10, iters=50,
                                breakdown=False).profile
        whatifs.append((name, prof.whatifs))
    for name, p50, ref, ref2, cv, ov in rows:
        print(f"{name:34s} dldoctor p50 {p50 * 1e3:8.3f} ms  Timer {ref * 1e3:8.3f} / {ref2 * 1e3:8.3f} ms  "
              f"ratio {p50 / ref:.3f}  cv {cv:.3f}  profiler overhead {ov or float('nan'):.2f}×", flush=True)
    for name, ws in whatifs:
        print(name)
        for w in ws:
            sp = "n/a" if w.speedup is None else f"{w.speedup:.2f}×"
            print(f"    {w.name:16s} {w.detail:14s} {sp:>8s}  rel {w.rel_diff}  rec {w.recommended}  {w.reason or ''}")
    md = ["## Profile: p50 against an independent timer, overhead, measured what-ifs", "",
          f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, batch 1, fp32; dldoctor: 10 warm-up + "
          "200 timed runs (what-ifs off, measured afterwards); reference: `torch.utils.benchmark.Timer.blocked_autorange` (median, ≥ 1 s) just before and "
          "just after, same process. Bar: within 10%. Reproduce: `python benchmarks/profile_bench.py`.", "",
          "| model | dldoctor p50 | Timer before | Timer after | p50 / Timer (before) | cv | profiler overhead |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {n} | {p * 1e3:.3f} ms | {r * 1e3:.3f} ms | {r2 * 1e3:.3f} ms | {p / r:.3f} | {cv:.3f} | "
           f"{'n/a' if ov is None else f'{ov:.2f}×'} |" for n, p, r, r2, cv, ov in rows]
    md += ["", "Measured what-ifs (speedup against the same model in the same run; recommended only at ≥ 1.1× with "
           "outputs within tolerance):", "", "| model | change | speedup | relative output difference | verdict |",
           "|---|---|---:|---:|---|"]
    for n, ws in whatifs:
        for w in ws:
            verdict = ("recommended" if w.recommended else f"tried: {w.reason or 'no gain'}") if w.applicable \
                else f"not applicable: {w.reason}"
            md.append(f"| {n} | {w.name}{' (' + w.detail + ')' if w.detail else ''} | "
                      f"{'n/a' if w.speedup is None else f'{w.speedup:.2f}×'} | "
                      f"{'n/a' if w.rel_diff is None else f'{w.rel_diff:.1e}'} | {verdict} |")
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "profile", md)


if __name__ == "__main__":
    main()
