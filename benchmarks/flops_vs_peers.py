"""dldoctor vs fvcore, ptflops and thop on torchvision models: accuracy and time.

Accuracy: GMACs against torchvision's published `_ops` (GMACs at the weights'
input size). Time: each tool's wall time divided by one bare forward pass of the
same model, measured in the same process (median of --repeat runs), so the
ratios survive a noisy machine.

    python benchmarks/flops_vs_peers.py --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MODELS = ["resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "swin_t", "vit_b_16"]


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def quiet(fn):
    def run():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return fn()

    return run


def tools(model, x):
    import dldoctor

    out = {
        "dldoctor": lambda: dldoctor.inspect(model, inputs=x, training=False, receptive_field=False).flops.macs / 1e9,
        "dldoctor (full inspect)": lambda: dldoctor.inspect(model, inputs=x).flops.macs / 1e9,
    }
    try:
        from fvcore.nn import FlopCountAnalysis

        out["fvcore"] = quiet(lambda: FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False).total() / 1e9)
    except ImportError:
        pass
    try:
        from ptflops import get_model_complexity_info

        out["ptflops"] = quiet(
            lambda: get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False)[0] / 1e9
        )
    except ImportError:
        pass
    try:
        from thop import profile

        # thop adds buffers to the model it profiles, so it gets a copy (the copy is not timed).
        out["thop"] = lambda: _thop(profile, model, x)
    except ImportError:
        pass
    return out


def _thop(profile, model, x):
    m = copy.deepcopy(model)
    t = time.perf_counter()
    macs = quiet(lambda: profile(m, inputs=(x,), verbose=False)[0])()
    _thop.elapsed = time.perf_counter() - t
    return macs / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    a = ap.parse_args()
    import torchvision
    from torchvision.models import get_model, get_model_weights

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for name in a.models.split(","):
        w = get_model_weights(name).DEFAULT
        ref = w.meta["_ops"]
        crop = w.transforms.keywords.get("crop_size", 224)
        model = get_model(name, weights=None).eval()
        x = torch.randn(1, 3, crop, crop)
        with torch.no_grad():
            model(x)  # warm-up
            _, bare = timed(lambda: model(x), a.repeat)
        for tool, fn in tools(model, x).items():
            try:
                fn()  # warm-up (imports, first-call costs)
                g, t = timed(fn, a.repeat)
                if tool == "thop":
                    t = _thop.elapsed
            except Exception as e:  # noqa: BLE001 - a peer failing is a result too
                rows.append((name, tool, ref, None, None, bare, f"{type(e).__name__}: {str(e)[:60]}"))
                continue
            rows.append((name, tool, ref, g, t, bare, ""))
            print(f"{name:20s} {tool:24s} ref {ref:8.3f} got {g:8.3f} err {100 * (g - ref) / ref:+7.2f}%  {t / bare:6.2f}x fwd", flush=True)
    md = render(rows, torchvision.__version__)
    if a.out:
        replace_block(a.out, "flops-vs-peers", md)
    else:
        print(md)


def replace_block(path: str, name: str, md: str) -> None:
    """Write `md` between <!-- name:start/end --> markers in `path` (appended if absent), atomically."""
    from dldoctor.fileops import write_atomic

    existing = open(path).read() if os.path.exists(path) else ""
    marker_a, marker_b = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{marker_a}\n{md}{marker_b}\n"
    if marker_a in existing and marker_b in existing:
        pre, rest = existing.split(marker_a, 1)
        text = pre + block + rest.split(marker_b, 1)[1].lstrip("\n")
    else:
        text = (existing.rstrip() + "\n\n" if existing else "# Benchmarks\n\n") + block
    write_atomic(path, text)


def write_block(out: str | None, name: str, md: str | list[str]) -> None:
    """A benchmark's Markdown: into its block of `out` (docs/benchmarks.md), or printed when no --out."""
    text = md if isinstance(md, str) else "\n".join(md) + "\n"
    if out:
        replace_block(out, name, text)
    else:
        print(text)


def render(rows, tv_version) -> str:
    lines = [
        "## FLOPs: dldoctor vs fvcore, ptflops, thop",
        "",
        f"GMACs at batch 1 on CPU, against torchvision {tv_version}'s published `_ops`; time is each tool's wall time "
        "divided by one bare forward pass of the same model in the same process (median of repeats). "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores. Reproduce: `make bench`.",
        "",
        "| model | tool | reference | counted | error | time / forward |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, tool, ref, g, t, bare, err in rows:
        if g is None:
            lines.append(f"| {name} | {tool} | {ref:.3f} | failed | {err} | |")
        else:
            lines.append(f"| {name} | {tool} | {ref:.3f} | {g:.3f} | {100 * (g - ref) / ref:+.2f}% | {t / bare:.2f}× |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
