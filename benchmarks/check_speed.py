"""`dldoctor check` over a folder of 50 small model files: seconds per file beyond the torch import.

Baseline and measurement run the same way, as fresh processes: `python -c "import torch,
dldoctor.cli"` (the one-time cost) and `dldoctor check DIR` (median of --repeat runs).
The issue's bar: under 0.3 s per file on these 2-core machines.

    python benchmarks/check_speed.py --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def make_folder(d: str, n: int = 50) -> None:
    import torch

    from sample_models.zoo import mlp, plain_cnn

    for i in range(n):
        if i % 5 == 4:  # every fifth file is ONNX
            m = plain_cnn(num_classes=10 + i)
            torch.onnx.export(m, (torch.randn(1, 3, 32, 32),), os.path.join(d, f"m{i:02d}.onnx"), dynamo=False)
        elif i % 2:
            torch.save(mlp(hidden=64 + i, seed=i), os.path.join(d, f"m{i:02d}.pt"))
        else:
            torch.save(plain_cnn(num_classes=10 + i, seed=i), os.path.join(d, f"m{i:02d}.pt"))


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        make_folder(d)
        py = sys.executable
        base = timed([py, "-c", "import torch, dldoctor.cli"], a.repeat)
        check = timed([py, "-m", "dldoctor", "check", d, "-q", "--format", "json", "-o", os.path.join(d, "out.json")], a.repeat)
        n = len([f for f in os.listdir(d) if f.startswith("m")])
    per = (check - base) / n
    print(f"import {base:.2f} s, check of {n} files {check:.2f} s, {per:.3f} s per file beyond the import")
    md = "\n".join([
        "## `dldoctor check` speed",
        "",
        f"{n} small model files (plain CNN and MLP pickles, one in five ONNX), every rule, JSON out. "
        f"Fresh processes, median of {a.repeat}, {os.cpu_count()} CPU cores. Reproduce: `python benchmarks/check_speed.py`.",
        "",
        "| one-time import (torch + dldoctor) | check of the folder | per file beyond the import | bar |",
        "|---:|---:|---:|---:|",
        f"| {base:.2f} s | {check:.2f} s | {per:.3f} s | 0.3 s |",
        "",
    ])
    if a.out:
        from benchmarks.flops_vs_peers import replace_block

        replace_block(a.out, "check-speed", md)
    else:
        print(md)


if __name__ == "__main__":
    main()
