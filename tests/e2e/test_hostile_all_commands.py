"""Every command refuses hostile model files: exit 2, the offending globals named, nothing executed, input unchanged.

The payloads are generated here (never downloaded). Each would create a canary file (or import a
canary module) if it ran; the canary must stay absent after every command.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dldoctor.cli import app

runner = CliRunner()
COMMANDS = {
    "inspect": ["inspect"],
    "check": ["check"],
    "probe": ["probe", "--steps", "2"],
    "profile": ["profile", "--iters", "2", "--warmup", "0", "--no-whatifs"],
    "compress": ["compress", "-t", "onnx-optimized", "--iters", "2"],
}


class Reduce:
    """Pickles as a call to fn(*args)."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def payloads(canary: Path) -> dict[str, object]:
    touch = f"open({str(canary)!r}, 'w').close()"
    return {
        "os.system": Reduce(os.system, f"touch {canary}"),
        "subprocess.call": Reduce(subprocess.call, ["touch", str(canary)]),
        "builtins.exec": Reduce(exec, touch),
        "builtins.eval": Reduce(eval, touch),
        "__import__": Reduce(__import__, "dldoctor_canary_module_that_must_not_load"),
        "getattr chain": Reduce(getattr, Reduce(__import__, "os"), "system"),
        "runpy": Reduce(__import__("runpy").run_path, str(canary) + ".py"),
        "webbrowser": Reduce(__import__("webbrowser").open, "http://127.0.0.1:9/"),
        "shutil.rmtree": Reduce(shutil.rmtree, str(canary.parent / "victim")),
    }


def hostile_files(d: Path, canary: Path) -> dict[str, Path]:
    (d / "victim").mkdir()
    files = {}
    for i, (name, obj) in enumerate(payloads(canary).items()):
        # a torch zip (data.pkl), a legit checkpoint with one poisoned object, and a bare pickle of a
        # different protocol, each with an extension that lies about it
        p = d / f"zip{i}.pt"
        torch.save(obj, p)
        files[f"{name} in torch zip"] = p
        p = d / f"ckpt{i}.pth"
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3, "extra": {"nested": [obj]}}, p)
        files[f"{name} nested in a checkpoint"] = p
        p = d / f"bare{i}.onnx"
        p.write_bytes(pickle.dumps(obj, protocol=i % (pickle.HIGHEST_PROTOCOL + 1)))
        files[f"{name} bare pickle, protocol {i % (pickle.HIGHEST_PROTOCOL + 1)}"] = p
    p = d / "handmade.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Reduce(os.system, f"touch {canary}"), protocol=4))
        z.writestr("archive/version", "3\n")
    files["hand-made zip, protocol 4"] = p
    return files


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    canary = d / "canary"
    return d, canary, hostile_files(d, canary)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_every_hostile_file(corpus, command):
    d, canary, files = corpus
    for label, p in files.items():
        before = (sha(p), os.stat(p).st_mtime_ns)
        args = [*COMMANDS[command], str(p)]
        if command == "compress":
            args += ["-o", str(d / f"out-{p.stem}")]
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (command, label, r.output)
        assert "refused" in r.output and "Traceback" not in r.output, (command, label, r.output)
        if not p.name.startswith("bare"):  # a bare pickle is never unpickled, --trust or not
            assert "--trust" in r.output, (command, label, r.output)  # the only door, named
        assert (sha(p), os.stat(p).st_mtime_ns) == before, (command, label)
        assert not canary.exists() and (d / "victim").is_dir(), (command, label)
        assert "dldoctor_canary_module_that_must_not_load" not in sys.modules
        assert not (d / f"out-{p.stem}").exists() or not any((d / f"out-{p.stem}").iterdir())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_leaves_a_valid_input_untouched(tmp_path, command):
    from tests.fixtures.probe_cases import mlp

    p = tmp_path / "model.pt"
    torch.save(mlp(depth=2), p)
    before = (sha(p), os.stat(p).st_mtime_ns, sorted(os.listdir(tmp_path)))
    args = [*COMMANDS[command], str(p)]
    if command == "compress":
        args += ["-o", str(tmp_path / "variants")]
    r = runner.invoke(app, args)
    assert r.exit_code in (0, 1), r.output
    after = sorted(x for x in os.listdir(tmp_path) if x != "variants")
    assert (sha(p), os.stat(p).st_mtime_ns, after) == before  # nothing written beside the input either


def broken_files(d: Path) -> dict[str, Path]:
    from tests.fixtures.probe_cases import mlp

    good = d / "good.pt"
    torch.save(mlp(depth=2), good)
    raw = good.read_bytes()
    files = {"empty": d / "empty.pt", "random bytes": d / "random.pt"}
    files["empty"].write_bytes(b"")
    files["random bytes"].write_bytes(os.urandom(4096))
    for frac in (0.1, 0.5, 0.9):
        p = d / f"trunc{int(frac * 100)}.pt"
        p.write_bytes(raw[: int(len(raw) * frac)])
        files[f"truncated at {frac:.0%}"] = p
    p = d / "nomember.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(p, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("data.pkl"):
                dst.writestr(item, src.read(item))
    files["zip without data.pkl"] = p
    onnx_path = d / "m.onnx"
    torch.onnx.export(mlp(depth=2).eval(), (torch.randn(1, 20),), str(onnx_path), dynamo=False)
    p = d / "corrupt.onnx"
    b = bytearray(onnx_path.read_bytes())
    b[10:40] = os.urandom(30)
    p.write_bytes(bytes(b[: len(b) // 2]))
    files["corrupted protobuf"] = p
    return files


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_gives_one_line_for_broken_files(tmp_path, command):
    for label, p in broken_files(tmp_path).items():
        before = sha(p)
        args = [*COMMANDS[command], str(p)]
        if command == "compress":
            args += ["-o", str(tmp_path / f"out-{p.stem}")]
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (command, label, r.output)
        assert "dldoctor: error:" in r.output and "Traceback" not in r.output, (command, label, r.output)
        assert sha(p) == before
