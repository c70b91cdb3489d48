"""Start-up (issue 16): a trivial inspect imports neither torch._dynamo nor sympy (seconds of start-up that a
3-layer MLP does not need), and a small CPU model is counted by running it on the CPU with the same figures as
on meta. The wall-time ratio against torchinfo is a benchmark (benchmarks/startup.py), not a test."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import torch
from torch import nn

from dldoctor.collect.torch_model import pass_device
from dldoctor.collect.trace import run_pass

PROBE = """
import sys
sys.argv = ["dldoctor", "inspect", sys.argv[1], "-s", "1,32", "-f", "json", "-q"]
from dldoctor.cli import main
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
print("HEAVY", [m for m in ("torch._dynamo", "sympy", "onnx", "onnxruntime", "captum", "torch_pruning",
                            "transformers", "torchvision") if m in sys.modules], file=sys.stderr)
"""


def test_trivial_inspect_imports_no_heavy_module(tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)), path)
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["flops"]["macs"] == 32 * 64 + 64 * 10
    heavy = next(line for line in out.stderr.splitlines() if line.startswith("HEAVY"))
    assert heavy == "HEAVY []", heavy


def test_small_cpu_models_run_on_cpu_with_the_meta_figures():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    x = (torch.randn(2, 3, 32, 32),)
    assert pass_device(m, x, "cpu") == "cpu"
    assert pass_device(m, (torch.randn(64, 3, 256, 256),), "cpu") == "meta"  # 50 MB of input: meta
    assert pass_device(copy.deepcopy(m).to("meta"), x, "cpu") == "meta"
    for train in (False, True):
        cpu, meta = run_pass(m, x, device="cpu", train=train), run_pass(m, x, device="meta", train=train)
        assert cpu.error is None and meta.error is None
        assert (cpu.macs, cpu.uncounted) == (meta.macs, meta.uncounted)
