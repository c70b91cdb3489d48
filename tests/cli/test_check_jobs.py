"""`dldoctor check --jobs N --timeout S`: worker processes; a hanging or crashing model is an error for that file only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


class Hang(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        time.sleep(600)
        return self.fc(x)


class Crash(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        os._exit(3)  # what a segfault in an extension looks like from outside


def test_jobs_with_timeout_isolates_hanging_and_crashing_models(tmp_path):
    for i in range(3):
        torch.manual_seed(i)
        torch.save(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), tmp_path / f"ok{i}.pt")
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dldoctor", "check", str(tmp_path), "tests.cli.test_check_jobs:Hang",
                        "tests.cli.test_check_jobs:Crash", "--jobs", "2", "--timeout", "8", "--format", "json", "-q"],
                       capture_output=True, text=True, cwd=ROOT, timeout=240)
    took = time.monotonic() - t
    assert r.returncode == 2, r.stderr  # a file that could not be checked is exit 2
    doc = json.loads(r.stdout)
    assert doc["summary"]["files"] == 5 and doc["summary"]["failed"] == 2
    assert sorted(os.path.basename(x["model"]["path"]) for x in doc["reports"]) == ["ok0.pt", "ok1.pt", "ok2.pt"]
    errors = " ".join(doc["errors"])
    assert "Hang" in errors and "--timeout 8" in errors
    assert "Crash" in errors and "died" in errors
    assert "Traceback" not in r.stderr
    assert took < 200  # the hanging model did not hold the run hostage


def test_jobs_gives_the_same_findings_as_one_process(tmp_path):
    for i in range(3):
        torch.manual_seed(i)
        torch.save(nn.Sequential(nn.Linear(8, 16), nn.Softmax(dim=1)), tmp_path / f"m{i}.pt")
    base = [sys.executable, "-m", "dldoctor", "check", str(tmp_path), "--loss", "ce", "--format", "json", "-q"]
    one = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=240)
    many = subprocess.run(base + ["--jobs", "2"], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert one.returncode == many.returncode == 1, (one.stderr, many.stderr)

    def key(doc):
        return [(os.path.basename(r["model"]["path"]), sorted(f["code"] for f in r["findings"])) for r in doc["reports"]]

    assert key(json.loads(one.stdout)) == key(json.loads(many.stdout))
