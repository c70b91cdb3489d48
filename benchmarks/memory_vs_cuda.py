"""dldoctor's training-step memory estimate against torch.cuda.max_memory_allocated.

Needs a CUDA GPU (run it on the GPU machine): for ResNet-50 at batch 32 and a
GPT-2-small-sized decoder (batch 8, 1024 tokens), it compares the estimate with
the peak of real Adam steps (forward, loss, backward, step, zero_grad) after a
warm-up step, and prints the ratio. The issue's bar: within 15%.

    python benchmarks/memory_vs_cuda.py [--out docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def measured_peak(model, x, loss: str, steps: int = 3) -> int:
    model = model.cuda().train()
    x = x.cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for i in range(steps):
        if i == 1:  # steady state: optimizer state exists from the first step on
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        out = model(x)
        if loss == "ce":
            logits = out.reshape(-1, out.shape[-1])
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=out.device)
            scalar = F.cross_entropy(logits, target)
        else:
            scalar = out.float().sum()
        scalar.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del out, scalar
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def cases():
    from torchvision.models import resnet50

    from sample_models.gpt import gpt

    yield "resnet50 b32", resnet50(), torch.randn(32, 3, 224, 224), "ce"
    yield "gpt2-small b8 T1024", gpt("small"), torch.randint(0, 50257, (8, 1024)), "ce"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    import dldoctor

    rows = []
    for name, model, x, loss in cases():
        est = dldoctor.inspect(model, inputs=x, optimizer="adam", loss=loss, receptive_field=False).memory.training_peak_bytes
        real = measured_peak(model, x, loss)
        rows.append((name, est, real))
        print(f"{name:22s} estimate {est / 2**30:7.3f} GiB  cuda max allocated {real / 2**30:7.3f} GiB  ratio {est / real:.3f}", flush=True)
        model.cpu()
        torch.cuda.empty_cache()
    md = ["## Training-step memory: estimate vs CUDA", "",
          f"{torch.cuda.get_device_name()} , torch {torch.__version__}, Adam, fp32. Reproduce: `python benchmarks/memory_vs_cuda.py`.", "",
          "| model | dldoctor estimate | torch.cuda.max_memory_allocated | estimate / measured |", "|---|---:|---:|---:|"]
    md += [f"| {n} | {e / 2**30:.3f} GiB | {r / 2**30:.3f} GiB | {e / r:.3f} |" for n, e, r in rows]
    if a.out:
        with open(a.out, "a") as fh:
            fh.write("\n" + "\n".join(md) + "\n")
    else:
        print("\n".join(md))


if __name__ == "__main__":
    main()
