"""Help pages (issue 16 item 9): options grouped in panels like ruff's, no typer placeholders (`<bool>` after a
flag, `<list[str]>`, `<str>`), the same concept under the same flag on every command."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from dldoctor.cli import app

runner = CliRunner()
COMMANDS = ["inspect", "check", "probe", "profile", "compress", "diff", "rules", "config"]


def _help(cmd: str) -> str:
    r = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_no_typer_placeholders(cmd):
    out = _help(cmd)
    assert not re.search(r"<(bool|str|int|float|list\[[a-z]+\])>", out), out


@pytest.mark.parametrize("cmd", ["inspect", "check", "probe", "profile", "compress"])
def test_options_are_grouped_in_panels(cmd):
    out = _help(cmd)
    for panel in ("Model loading", "Inputs", "Output"):
        assert f"─ {panel} " in out, (cmd, panel)


def test_same_concept_same_flag():
    """--dtype is the input dtype on every command that makes inputs; --precision the compute precision where a
    model is run at another one; --input-shape/-s, --device, --loss and --trust everywhere they apply."""
    for cmd in ("inspect", "check", "probe", "profile", "compress", "diff"):
        out = _help(cmd)
        for flag in ("--input-shape", "--dtype", "--trust", "--device"):
            assert flag in out, (cmd, flag)
    assert "--precision" in _help("profile")  # compress: each variant is its own precision (torch-fp16, ...)
    for cmd in ("inspect", "check", "probe", "diff"):
        assert "--loss" in _help(cmd), cmd
