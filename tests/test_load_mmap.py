"""A large state_dict is described without reading its weights into memory (zip checkpoints are memory-mapped)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, resource, sys
import torch
from dldoctor.load import load
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loaded = load(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kb": after - before, "tensors": len(loaded.tensors or [])}))
"""


def test_large_state_dict_is_memory_mapped(tmp_path):
    p = tmp_path / "big.pt"
    torch.save({f"layer{i}.weight": torch.ones(2048, 2048) for i in range(16)}, p)  # 268 MB of float32
    out = subprocess.run([sys.executable, "-c", PROBE, str(p)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["tensors"] == 16
    assert doc["growth_kb"] < 64 * 1024, doc  # well under the 256 MiB a full read would take
