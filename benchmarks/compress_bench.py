"""`dldoctor compress` targets, side by side with the plain ONNX Runtime and torch tools, in one run.

1. Linear-heavy models (a 4-layer TransformerEncoder d=256, an MLP): ONNX dynamic int8 with
   dldoctor's preparation vs a plain `quantize_dynamic`, size, fidelity on held inputs and
   CPU latency (bar: ≥ 3.5× smaller, top-1 ≥ 99%, cosine ≥ 0.99). The encoder is measured
   as built (its layers are deep copies with identical weights, which the exporter stores once
   and routes through Identity/Transpose nodes: the case that defeats the plain quantizer)
   and with distinct weights per layer (what a trained encoder has).
2. A ResNet-like CNN: static int8 (QDQ, per-channel), size, fidelity, measured speedup.
3. Structured pruning of 50% of resnet18's channels: saved size and CPU latency.
4. The plain torch tool on the MLP: `torch.ao.quantization.quantize_dynamic`.

    python benchmarks/compress_bench.py [--out docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dldoctor.transforms import onnx_variants as onnx_tf, torch_variants as torch_tf  # noqa: E402
from tests.transforms.test_transforms_onnx import _fit_head, _task  # noqa: E402
from dldoctor.api.compress import _latency_onnx, _onnx_outputs, _saved_size, _torch_outputs, fidelity  # noqa: E402


class Encoder(nn.Module):
    def __init__(self, distinct: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        if distinct:  # what training does: every layer its own weights
            with torch.no_grad():
                for p in self.enc.parameters():
                    p.add_(torch.randn_like(p) * 0.02)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x).mean(1))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def resnet_like() -> nn.Module:
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                   nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.a(x))

    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), Block(64),
                         nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
                         Block(128), Block(128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)).eval()


def fitted(model: nn.Module, head: nn.Linear, shape: list[int]) -> tuple[nn.Module, object]:
    """A random body with a classifier head fitted to a synthetic 10-class task (ridge regression, one pass):
    its logits have the margins of a trained classifier, so top-1 agreement means something."""
    sample = _task(tuple(shape[1:]), seed=7)
    return _fit_head(model, head, sample), sample


def held(sample: object, shape: list[int], n: int = 8, seed: int = 123) -> list[tuple]:
    return [(sample(shape[0], seed + i)[0],) for i in range(n)]


def onnx_row(name: str, model: nn.Module, shape: list[int], d: str, static: bool = False) -> list[tuple]:
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    model, sample = fitted(model.eval(), head, shape)
    batches = held(sample, shape)
    fp32 = onnx_tf.export_onnx(model, batches[0], os.path.join(d, f"{name}.onnx"))
    ref = _onnx_outputs(fp32, batches)
    base_size = onnx_tf.file_size(fp32)
    one = tuple(t[:1] for t in batches[0])
    base_p50 = _latency_onnx(fp32, one, 10, 50)[0]
    rows = []
    variants = [("plain quantize_dynamic", lambda dst: onnx_tf.naive_quantize_dynamic(fp32, dst)),
                ("dldoctor dynamic int8", lambda dst: onnx_tf.quantize_dynamic_int8(fp32, dst))]
    if static:
        feeds = [{"input_0": b[0].numpy()} for b in held(sample, shape, 4, seed=500)]
        import onnx

        in_name = onnx.load(fp32, load_external_data=False).graph.input[0].name
        feeds = [{in_name: f["input_0"]} for f in feeds]
        variants = [("dldoctor static int8 (QDQ, per-channel)", lambda dst: onnx_tf.quantize_static_int8(fp32, dst, feeds))]
    for label, make in variants:
        dst = os.path.join(d, f"{name}-{len(rows)}.onnx")
        make(dst)
        got = _onnx_outputs(dst, batches)
        fid = fidelity(ref, got, classifier=True)
        p50 = _latency_onnx(dst, one, 10, 50)[0]
        rows.append((name, label, base_size / onnx_tf.file_size(dst), fid.top1, fid.cosine, base_p50 / p50))
        print(f"{name:34s} {label:42s} {rows[-1][2]:5.2f}× smaller  top-1 {fid.top1:.3f}  cos {fid.cosine:.4f}  "
              f"speedup {rows[-1][5]:.2f}×", flush=True)
    return rows


def median_time(model: nn.Module, x: torch.Tensor, n: int = 20) -> float:
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)  # one thread: this 2-core machine is shared; ratios are steadier
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as d:
        rows += onnx_row("TransformerEncoder 4×d256, as built", Encoder(False), [8, 16, 256], d)
        rows += onnx_row("TransformerEncoder 4×d256, distinct layers", Encoder(True), [8, 16, 256], d)
        rows += onnx_row("MLP 256-1024-1024-256-10", mlp(), [8, 256], d)
        rows += onnx_row("ResNet-like CNN (64/128 ch), 32×32", resnet_like(), [8, 3, 32, 32], d, static=True)
    # the plain torch tool on the MLP
    m = mlp().eval()
    m, sample = fitted(m, m[-1], [8, 256])
    x = sample(64, 321)[0]
    q, _ = torch_tf.dynamic_int8(m)
    fid = fidelity(_torch_outputs(m, [(x,)]), _torch_outputs(q, [(x,)]), classifier=True)
    x = x[:8]
    torch_row = ("MLP 256-1024-1024-256-10", "torch.ao quantize_dynamic (PyTorch)", _saved_size(m) / _saved_size(q),
                 fid.top1, fid.cosine, median_time(m, x) / median_time(q, x))
    rows.append(torch_row)
    print(torch_row, flush=True)
    # structured pruning
    from torchvision.models import resnet18

    r = resnet18(num_classes=10).eval()
    xi = torch.randn(8, 3, 64, 64)
    pruned, _ = torch_tf.prune_channels(r, (xi,), amount=0.5)
    t0, t1 = median_time(r, xi), median_time(pruned, xi)
    prune = (_saved_size(r) / _saved_size(pruned), t0 / t1, sum(p.numel() for p in r.parameters()),
             sum(p.numel() for p in pruned.parameters()), t0, t1)
    print(f"resnet18 pruned 50%: {prune[0]:.2f}× smaller, {prune[1]:.2f}× faster ({t0 * 1e3:.1f} → {t1 * 1e3:.1f} ms)")
    md = ["## Compress: variants against the original, and against the plain tools", "",
          f"torch {torch.__version__}, onnxruntime CPUExecutionProvider, 1 thread; fidelity on 64 held random inputs "
          "against the fp32 model; speedup of batch 1 p50. Targets: Linear-heavy ONNX int8 ≥ 3.5× smaller with top-1 ≥ 99% "
          "and cosine ≥ 0.99; CNN static int8 ≥ 3.5× smaller; pruning 50% ≥ 1.8× smaller and ≥ 1.3× faster. "
          "Reproduce: `python benchmarks/compress_bench.py`.", "",
          "| model | variant | smaller | top-1 agreement | cosine | CPU speedup |", "|---|---|---:|---:|---:|---:|"]
    md += [f"| {n} | {v} | {s:.2f}× | {t:.1%} | {c:.4f} | {sp:.2f}× |" for n, v, s, t, c, sp in rows]
    md += ["", f"Structured pruning (Torch-Pruning DepGraph, magnitude, 50% of the channels, classifier kept) of "
           f"torchvision resnet18 (10 classes), batch 8 at 64×64, 1 thread: {prune[2]:,} → {prune[3]:,} parameters, "
           f"saved file {prune[0]:.2f}× smaller, {prune[4] * 1e3:.1f} → {prune[5] * 1e3:.1f} ms ({prune[1]:.2f}× faster). "
           "The pruned weights are not fine-tuned: accuracy has to be recovered by training."]
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "compress", md)


if __name__ == "__main__":
    main()
