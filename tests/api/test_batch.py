"""api/batch.py: the folder scan and the loop over many files that `check` and `inspect` share (the CLI only shows
progress and renders the Batch)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.api.batch import Batch, expand, run_files
from dldoctor.cli import app
from dldoctor.errors import LoadError


def fake_report(errors=()):
    return SimpleNamespace(diagnostics=[SimpleNamespace(level="error", message=m) for m in errors], findings=[])


def test_expand_is_api_not_typer(tmp_path):
    """An empty folder is a LoadError (the CLI turns it into one line, a hint and exit 2), not a Typer exit."""
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LoadError, match="no model files in this folder") as e:
        expand([str(tmp_path)])
    assert ".safetensors" in e.value.hint
    (tmp_path / "b.pt").write_bytes(b"")
    (tmp_path / ".hidden.pt").write_bytes(b"")
    assert expand([str(tmp_path), "torchvision.models:resnet18"]) == [str(tmp_path / "b.pt"), "torchvision.models:resnet18"]


def test_run_files_keeps_going_and_counts():
    seen = []

    def one(src):
        if src == "load":
            raise LoadError("load: not a model file", "pass a model file")
        if src == "crash":
            raise ZeroDivisionError("division by zero\nsecond line")
        return fake_report(["forward failed"] if src == "broken" else []), [("ARC001", "boom")] if src == "rule" else []

    def around(src):
        seen.append(src)
        return open(os.devnull)

    b = run_files(["ok", "load", "crash", "broken", "rule"], one, problems=["dir: cannot list this folder"], around=around)
    assert seen == ["ok", "load", "crash", "broken", "rule"]
    assert len(b.reports) == 3 and (b.unloaded, b.failed, b.rule_errors) == (2, 3, 1)
    assert b.failures == ["dir: cannot list this folder",
                          "load: not a model file (hint: pass a model file)",  # named once, not "load: load: ..."
                          "crash: internal error: ZeroDivisionError: division by zero",
                          "broken: forward failed",
                          "rule: rule ARC001 failed: boom"]
    assert len(b.tracebacks) == 1 and "ZeroDivisionError" in b.tracebacks[0]


def test_run_files_can_raise_instead():
    def load_error(src):
        raise LoadError("bad")

    def crash(src):
        raise ZeroDivisionError("x")

    with pytest.raises(LoadError):
        run_files(["a"], load_error, keep_going=False)
    with pytest.raises(ZeroDivisionError):
        run_files(["a", "b"], crash, catch_internal=False)


def test_worker_results_are_filed_like_in_process_ones():
    from dldoctor.report.types import ModelInfo, Report

    b = Batch()
    b.add_result(("ok", "a.pt", Report(ModelInfo("a.pt", "torch-module")).to_dict(), [("X1", "m")]))
    b.add_result(("timeout", "b.pt", "no result within --timeout 1 s", None))
    b.add_result(("internal-error", "c.pt", "KeyError: 'w'", "Traceback ..."))
    assert b.failures == ["a.pt: rule X1 failed: m", "b.pt: no result within --timeout 1 s",
                          "c.pt: internal error: KeyError: 'w'"]
    assert (len(b.reports), b.unloaded, b.failed, b.rule_errors, b.tracebacks) == (1, 2, 2, 1, ["Traceback ..."])


def test_inspect_folder_names_a_failing_file_once(tmp_path):
    """inspect and check share the loop: a load error that already names the file is not prefixed a second time
    (inspect used to print `dldoctor: error: DIR/fifo.pt: DIR/fifo.pt: not a regular file`)."""
    torch.save(nn.Sequential(nn.Linear(8, 4)), tmp_path / "a.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    for cmd in ("inspect", "check"):
        r = CliRunner().invoke(app, [cmd, str(tmp_path), "-q", "-s", "1,8", "-f", "json"])
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.stderr.splitlines() if "fifo.pt" in ln]
        assert len(lines) == 1 and lines[0].count("fifo.pt") == 1 and "not a regular file" in lines[0], (cmd, lines)
