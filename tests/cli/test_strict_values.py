"""Strict values (issue 16 item 7): a bad option value or an unknown option is refused when the command line is
read, in the tool's one-line style (`dldoctor: error: ...` and a hint), exit 2, before anything loads, and never
as Click's boxed panel or a traceback. Run through `python -m dldoctor` (the real entry point)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    path = tmp_path_factory.mktemp("strict") / "mlp.pt"
    torch.save(nn.Sequential(nn.Linear(8, 4)), path)
    return str(path)


def dd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dldoctor", *args], capture_output=True, text=True, timeout=300)


CASES = [
    (("inspect", "{m}", "--dtype", "float33"), "unknown dtype 'float33'"),
    (("check", "{m}", "--dtype", "float33"), "unknown dtype 'float33'"),
    (("probe", "{m}", "--dtype", "float33"), "unknown dtype 'float33'"),
    (("profile", "{m}", "--dtype", "float33"), "unknown dtype 'float33'"),
    (("compress", "{m}", "--dtype", "float33"), "unknown dtype 'float33'"),
    (("inspect", "{m}", "--timeout", "0"), "need a positive number of seconds"),
    (("check", "{m}", "--timeout", "-3"), "need a positive number of seconds"),
    (("compress", "{m}", "--max-drop", "150%"), "between 0 and 100%"),
    (("compress", "{m}", "--max-drop=-1"), "between 0 and 100%"),
    (("check", "{m}", "--fail-on", "bogus"), "--fail-on must be one of"),
    (("inspect", "{m}", "--bogus"), "no such option: --bogus"),
    (("inspect",), "missing argument"),
]


@pytest.mark.parametrize("args,said", CASES, ids=lambda c: " ".join(c) if isinstance(c, tuple) else None)
def test_bad_values_exit_2_in_one_line_with_a_hint(mlp, tmp_path, args, said):
    out = dd(*[a.format(m=mlp) for a in args], *(["-o", str(tmp_path / "out")] if args[0] == "compress" else []))
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("dldoctor: error: ") and said in lines[0], out.stderr
    assert len(lines) == 2 and lines[1].startswith("  hint: "), out.stderr
    assert "╭" not in out.stderr and "Traceback" not in out.stderr and out.stdout == ""
    assert not (tmp_path / "out").exists()


def test_a_near_miss_names_the_option(mlp):
    out = dd("check", mlp, "--selct", "ARC")
    assert out.returncode == 2 and "did you mean --select?" in out.stderr


def test_help_and_version_still_exit_0():
    for args in (("--help",), ("inspect", "--help"), ("--version",), ()):
        out = dd(*args)
        assert out.returncode == 0, (args, out.stderr)
        assert out.stdout.strip()
