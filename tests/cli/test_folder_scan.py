"""Folder scans (`check DIR`, `inspect DIR`): an entry named like a model that is special (a FIFO, a socket, a link to
nothing) or that fails on read (EIO) is one error line for that entry; the other files' reports are kept; nothing
hangs and nothing is an "internal error". Tests run as root, so permission bits cannot make a file unreadable: a
failing read is simulated by making open() raise OSError(EIO) for one file, in-process."""
from __future__ import annotations

import builtins
import errno
import json
import os
import socket

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app

runner = CliRunner()


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(8, 4)), d / "a_good.pt")
    torch.save(nn.Sequential(nn.Linear(8, 2)), d / "sub" / "z_good.pt")
    os.mkfifo(d / "fifo.pt")
    os.symlink(tmp_path / "gone.pt", d / "dangling.onnx")
    (d / "folder.pt").mkdir()  # a folder named like a model is searched like any folder
    torch.save(nn.Sequential(nn.Linear(8, 3)), d / "folder.pt" / "inner.pt")
    (d / "eio.safetensors").write_bytes(b"\x00" * 64)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.pth"))
    yield d
    sock.close()


def failing_open(monkeypatch, name):
    real = builtins.open

    def fake(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).endswith(name):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(file))
        return real(file, *a, **k)

    monkeypatch.setattr(builtins, "open", fake)


BAD = {"fifo.pt": "not a regular file", "dangling.onnx": "broken symlink", "sock.pth": "not a regular file",
       "eio.safetensors": "Input/output error"}


@pytest.mark.parametrize("cmd", ["check", "inspect"])
def test_special_and_unreadable_entries_are_one_line_each(cmd, folder, monkeypatch):
    failing_open(monkeypatch, "eio.safetensors")
    r = runner.invoke(app, [cmd, str(folder), "-f", "json", "-q", "-s", "1,8"])
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("dldoctor: error:")]
    for name, why in BAD.items():
        mine = [ln for ln in errors if name in ln]
        assert len(mine) == 1 and why in mine[0], (name, errors)
    assert len(errors) == len(BAD), errors
    doc = json.loads(r.stdout)
    reports = doc["reports"] if isinstance(doc, dict) and "reports" in doc else doc
    paths = sorted(os.path.relpath(rep["model"]["path"], folder) for rep in reports)
    assert paths == ["a_good.pt", os.path.join("folder.pt", "inner.pt"), os.path.join("sub", "z_good.pt")], paths


def test_check_in_a_worker_reports_special_entries_per_file(folder):
    os.unlink(folder / "eio.safetensors")
    r = runner.invoke(app, ["check", str(folder), "-f", "json", "-q", "-s", "1,8", "--timeout", "120"])  # one worker process
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("dldoctor: error:")]
    assert len(errors) == 3, errors
    assert len(json.loads(r.stdout)["reports"]) == 3


def test_a_file_that_fails_on_read_alone_is_one_line(tmp_path, monkeypatch):
    p = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Linear(8, 4)), p)
    failing_open(monkeypatch, "model.pt")
    for cmd in ("inspect", "check", "profile"):
        r = runner.invoke(app, [cmd, str(p), "-q"])
        assert r.exit_code == 2, r.output
        assert "internal error" not in r.output and "Input/output error" in r.output, r.output
