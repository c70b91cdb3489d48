"""A large state_dict is described without reading its weights into memory (zip checkpoints are memory-mapped)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork, so under a large pytest
# process it would not move at all; exec starts a new address space whose high-water mark is this process's
PROBE = """
import json, re, sys
import torch
from dldoctor.load import load
hwm = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
before = hwm()
loaded = load(sys.argv[1])
after = hwm()
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
