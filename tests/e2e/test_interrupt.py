"""Ctrl-C: an interrupted run exits 130 with one line, leaves no partial files, and removes every hook."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import dldoctor

ROOT = Path(__file__).resolve().parents[2]


class Slow(nn.Module):
    """A small model whose forward takes a while: something to interrupt."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        time.sleep(0.2)
        return self.fc(x)


class Interrupts(nn.Module):
    """Raises KeyboardInterrupt on its third forward, as Ctrl-C would in the middle of a run."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return self.fc(x)


def _clean(m: nn.Module) -> bool:
    return all(not x._forward_hooks and not x._forward_pre_hooks and not x._backward_hooks for x in m.modules())


@pytest.mark.parametrize("call", ["probe", "profile"])
def test_interrupt_inside_a_run_removes_hooks_and_restores_the_model(call):
    m = Interrupts()
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fn = {"probe": lambda: dldoctor.probe(m, input_shapes=[[8, 16]], steps=10, attribution=False),
          "profile": lambda: dldoctor.profile(m, input_shapes=[[1, 16]], warmup=1, iters=5, whatifs=False)}[call]
    with pytest.raises(KeyboardInterrupt):
        fn()
    assert _clean(m) and m.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("argv, made", [
    (["probe", "tests.e2e.test_interrupt:Slow", "-s", "8,16", "--steps", "200", "-f", "html", "-o", "{d}/probe.html"],
     "probe.html"),
    (["compress", "tests.e2e.test_interrupt:Slow", "-s", "1,16", "--iters", "200", "-o", "{d}/variants"], "variants"),
])
def test_ctrl_c_leaves_no_partial_files(tmp_path, argv, made):
    argv = [a.format(d=tmp_path) for a in argv]
    # a shell that starts the test run in the background (`make test &`, a CI runner) hands SIGINT down as
    # ignored, and Python then never installs its KeyboardInterrupt handler: give the child the default back,
    # as a terminal's Ctrl-C would find it
    p = subprocess.Popen([sys.executable, "-m", "dldoctor", *argv, "-q"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(5)  # past the imports, into the run
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / made).exists(), os.listdir(tmp_path)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files either


class Hangs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        while True:  # a forward that never returns
            time.sleep(0.05)


@pytest.mark.parametrize("argv", [
    ["inspect", "tests.e2e.test_interrupt:Hangs", "-s", "1,16"],
    ["probe", "tests.e2e.test_interrupt:Hangs", "-s", "8,16"],
    ["profile", "tests.e2e.test_interrupt:Hangs", "-s", "1,16"],
    ["compress", "tests.e2e.test_interrupt:Hangs", "-s", "1,16", "-o", "{d}/v"],
])
def test_timeout_stops_a_hanging_model_with_exit_2(tmp_path, argv):
    from typer.testing import CliRunner

    from dldoctor.cli import app

    t = time.monotonic()
    r = CliRunner().invoke(app, [a.format(d=tmp_path) for a in argv] + ["--timeout", "3", "-q"])
    assert r.exit_code == 2, r.output
    assert "--timeout 3" in r.output and "Traceback" not in r.output
    assert time.monotonic() - t < 30
    assert not (tmp_path / "v").exists()


class NativeHang(nn.Module):
    """A forward stuck inside native code: SIGALRM is blocked in this thread and libc's sleep never returns to
    Python, as with a C++ kernel that loops. Python's signal handler cannot run here; only the watchdog can act."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        import ctypes

        if x.shape[0] == 1:  # batch 1 passes (compress inspects at batch 1, then hangs in its own work)
            return self.fc(x)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        ctypes.CDLL(None).sleep(120)
        return self.fc(x)


# The deadline must fall inside the hang, not before it (then Python takes the alarm, the ordinary path):
# inspect hangs in its first forward; compress first inspects and opens its work folder, about 2.2 s here,
# so it gets a deadline well past that.
@pytest.mark.parametrize("argv, made, timeout", [
    (["inspect", "tests.e2e.test_interrupt:NativeHang", "-s", "2,16", "-f", "json", "-o", "{d}/report.json"],
     "report.json", 2),
    (["compress", "tests.e2e.test_interrupt:NativeHang", "-s", "1,16", "-o", "{d}/variants"], "variants", 8),
])
def test_timeout_ends_a_native_hang_with_exit_2_and_no_partial_files(tmp_path, argv, made, timeout):
    from dldoctor.cli.common import NATIVE_GRACE_S

    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "dldoctor", *[a.format(d=tmp_path) for a in argv], "--timeout",
                        str(timeout), "-q"], cwd=ROOT, capture_output=True, text=True, timeout=100)
    took = time.monotonic() - t
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert f"--timeout {timeout}" in p.stderr and "native code" in p.stderr and "Traceback" not in p.stderr
    assert took < timeout + NATIVE_GRACE_S + 40  # the imports, then the deadline and its grace; not the 120 s
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)  # no output, no temporary file, no work folder
