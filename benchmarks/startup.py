"""Start-up: a trivial `dldoctor inspect` (a 3-layer MLP) against a script that imports torch and prints a
torchinfo summary of the same model (issue 16's bar: at most 1.3x), both as fresh processes, interleaved
A B A B ... so a busy machine slows both alike; the ratio is taken per pair and the median reported with the
pairs' spread.

    python benchmarks/startup.py --out docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

BASELINE = """
import sys, torch
m = torch.load(sys.argv[1], weights_only=False)
try:
    import torchinfo
    torchinfo.summary(m, input_size=(1, 32))
except ImportError:  # the bare floor: import torch, run the model once, print it
    m(torch.randn(1, 32)); print(m)
"""


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    import torch

    try:
        import torchinfo  # noqa: F401
        base_name = "import torch + torchinfo.summary"
    except ImportError:
        base_name = "import torch + one forward + print(model) (torchinfo not installed)"
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "mlp.pt")
        torch.save(torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)), model)
        script = os.path.join(d, "baseline.py")
        with open(script, "w") as f:
            f.write(BASELINE)
        a_cmd = [sys.executable, script, model]
        b_cmd = [sys.executable, "-m", "dldoctor", "inspect", model, "-s", "1,32"]
        wall(a_cmd), wall(b_cmd)  # warm the file cache
        load0 = os.getloadavg()[0]
        pairs = [(wall(a_cmd), wall(b_cmd)) for _ in range(a.rounds)]
        load1 = os.getloadavg()[0]
    ratios = sorted(b / a for a, b in pairs)
    med = statistics.median(ratios)
    md = ["## Start-up: a trivial inspect against torchinfo", "",
          f"Reproduce: `python benchmarks/startup.py`. Fresh processes, {a.rounds} interleaved pairs, "
          f"{os.cpu_count()} cores, load average {load0:.1f} -> {load1:.1f}. Baseline: {base_name} of a 3-layer MLP; "
          "dldoctor: `dldoctor inspect mlp.pt -s 1,32` (counts, memory, rules, the table). Bar: 1.3x.", "",
          "| | median | min | max |", "|---|---:|---:|---:|",
          f"| baseline | {statistics.median(p[0] for p in pairs):.2f} s | {min(p[0] for p in pairs):.2f} s | "
          f"{max(p[0] for p in pairs):.2f} s |",
          f"| dldoctor inspect | {statistics.median(p[1] for p in pairs):.2f} s | {min(p[1] for p in pairs):.2f} s | "
          f"{max(p[1] for p in pairs):.2f} s |",
          f"| **ratio per pair** | **{med:.2f}x** | {ratios[0]:.2f}x | {ratios[-1]:.2f}x |", "",
          "What made the difference: a small model with real weights on the CPU is counted by running it there "
          "(`collect/torch_model.py: pass_device`) rather than on the meta device, whose Python kernels import sympy "
          "and torch._dynamo; dldoctor's dispatch modes opt out of torch's `_disable_dynamo` wrapper "
          "(`_should_skip_dynamo`), whose first call imports torch._dynamo.", ""]
    from benchmarks.flops_vs_peers import write_block

    write_block(a.out, "startup", md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
