"""dldoctor's training-step memory estimate against torch's own CPU memory profiler.

The GPU reference is `torch.cuda.max_memory_allocated` (benchmarks/memory_vs_cuda.py,
needs a GPU). On CPU the same reference is torch's memory profiler: one Adam step
(forward, cross-entropy, backward, step, zero_grad) after a warm-up step is
profiled with `profile_memory=True`, and the peak of the live bytes over its
allocation timeline is the measured figure. It counts every tensor the CPU
allocator hands out, parameters, gradients and optimizer state included.

    python benchmarks/memory_vs_profiler.py [--quick] [--out docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _step(model: torch.nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    out = model(x)
    logits = out.reshape(-1, out.shape[-1])
    loss = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def profiled_peak(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak live CPU bytes of one steady-state Adam step, from torch's memory profiler."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    was = model.training
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    try:
        _step(model, x, opt)  # the optimizer state exists from the first step on
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            _step(model, x, opt)
        live = peak = 0
        for _, action, (key, _), size in prof._memory_profile().timeline:
            if key.device.type != "cpu":
                continue
            if action in (Action.PREEXISTING, Action.CREATE):
                live += size
            elif action == Action.DESTROY:
                live -= size
            peak = max(peak, live)
        return peak
    finally:
        model.train(was)


def cases(quick: bool):
    from sample_models.gpt import gpt

    if quick:
        from sample_models.zoo import resnet_small

        yield "resnet_small b16 64×64", resnet_small(), torch.randn(16, 3, 64, 64)
        yield "gpt tiny b8 T128", gpt("tiny"), torch.randint(0, 1000, (8, 128))
        return
    from torchvision.models import resnet18, resnet50

    yield "resnet18 b8", resnet18(), torch.randn(8, 3, 224, 224)
    yield "resnet50 b32", resnet50(), torch.randn(32, 3, 224, 224)
    yield "gpt2-small b2 T1024", gpt("small"), torch.randint(0, 50257, (2, 1024))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="small models only (no torchvision)")
    a = ap.parse_args()
    import dldoctor

    rows = []
    for name, model, x in cases(a.quick):
        t = time.perf_counter()
        est = dldoctor.inspect(model, inputs=x, optimizer="adam", loss="ce",
                               receptive_field=False).memory.training_peak_bytes
        t_est = time.perf_counter() - t
        real = profiled_peak(model, x)
        rows.append((name, est, real, t_est))
        print(f"{name:24s} estimate {est / 2**20:9.1f} MiB  profiler {real / 2**20:9.1f} MiB  "
              f"ratio {est / real:.3f}  (estimate took {t_est:.2f} s)", flush=True)
    md = ["## Training-step memory: estimate vs torch's CPU memory profiler", "",
          f"torch {torch.__version__}, CPU, Adam, fp32, cross-entropy; the estimate is computed on the meta "
          "device (nothing allocated). Reproduce: `python benchmarks/memory_vs_profiler.py`. The GPU counterpart "
          "(`torch.cuda.max_memory_allocated`) is benchmarks/memory_vs_cuda.py.", "",
          "| model | dldoctor estimate | profiler peak | estimate / measured |", "|---|---:|---:|---:|"]
    md += [f"| {n} | {e / 2**20:,.1f} MiB | {r / 2**20:,.1f} MiB | {e / r:.3f} |" for n, e, r, _ in rows]
    if a.out:
        from benchmarks.flops_vs_peers import replace_block

        replace_block(a.out, "memory-vs-profiler", "\n".join(md) + "\n")
    else:
        print("\n".join(md))


if __name__ == "__main__":
    main()
