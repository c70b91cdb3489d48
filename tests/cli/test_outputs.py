"""-o and the other output flags: a path that is an input, not a regular file, or in a folder that cannot take a
new file is refused before any work starts (one line, exit 2), by the one check every command calls
(`dldoctor.fileops.check_output_path`)."""
from __future__ import annotations

import hashlib
import os
import socket
import stat

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.fileops import OutputPathError, check_output_path

runner = CliRunner()
BUILT = []  # factory calls: a refused run must not have built (or loaded) anything


def counted() -> nn.Module:
    BUILT.append(1)
    return nn.Sequential(nn.Linear(8, 4))


SPEC = "tests.cli.test_outputs:counted"
FAST = {"probe": ["--steps", "2", "--no-attribution"], "profile": ["--iters", "2", "--warmup", "1", "--no-whatifs"],
        "compress": ["--iters", "2", "-t", "torch-fp16"]}


def sha(p) -> str:
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.fixture()
def model(tmp_path):
    p = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Linear(8, 4)), p)
    return p


def invoke(cmd, *args):
    args = [str(a) for a in args]
    if cmd == "diff":
        return runner.invoke(app, ["diff", args[0], args[0], *args[1:], "-q"])
    return runner.invoke(app, [cmd, *args, "-q", *FAST.get(cmd, [])])


def refused(r, *words):
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("dldoctor: error:")]
    assert len(lines) == 1, r.output
    for w in words:
        assert w in lines[0], r.output
    return lines[0]


def no_temp_files(folder):
    left = [f for f in os.listdir(folder) if f.endswith(".tmp") or f.startswith(".dldoctor-")]
    assert not left, left


REPORTERS = ["inspect", "check", "probe", "profile", "diff"]


@pytest.mark.parametrize("cmd", REPORTERS)
@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "relative"])
def test_output_that_is_the_input_is_refused_and_the_model_kept(cmd, how, model, tmp_path, monkeypatch):
    before = sha(model)
    out = {"same": model, "relative": "../" + model.parent.name + "/model.pt"}.get(how, tmp_path / "alias.pt")
    if how == "symlink":
        os.symlink(model, out)
    elif how == "hardlink":
        os.link(model, out)
    elif how == "relative":
        monkeypatch.chdir(tmp_path)
    r = invoke(cmd, model, "-f", "json", "-o", out)
    refused(r, "never writes over its inputs")
    assert sha(model) == before and os.path.isfile(model) and not os.path.islink(model)
    if how == "symlink":
        assert os.path.islink(out)
    no_temp_files(tmp_path)


@pytest.mark.parametrize("cmd", REPORTERS)
def test_bad_output_paths_are_refused_before_any_work(cmd, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    cases = {
        tmp_path / "folder": "is a folder",
        tmp_path / "plain" / "report.json": "is a file, not a folder",
        tmp_path / "plain" / "sub" / "report.json": "is a file, not a folder",
        fifo: "FIFO",
        sock_path: "socket",
        "": "empty",
    }
    # a character device like /dev/null (1, 3), made in tmp_path: the real /dev/null and /dev/stdout are checked in
    # test_check_output_path_unit only, so that this test cannot replace them on a build without the check
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        cases[tmp_path / "null"] = "character device"
    except (OSError, AttributeError):
        pass
    try:
        for out, words in cases.items():
            BUILT.clear()
            line = refused(invoke(cmd, SPEC, "-s", "1,8", "-o", out), words)
            assert "/tmp/tmp" not in line.replace(str(tmp_path), "")  # no temporary name leaks
            assert BUILT == [], f"{cmd} -o {out}: the model was built before the refusal"
    finally:
        sock.close()
    assert os.path.isdir(tmp_path / "folder") and not os.listdir(tmp_path / "folder")
    assert (tmp_path / "plain").read_text() == "x"
    no_temp_files(tmp_path)


def test_a_folder_where_no_file_can_be_made_is_refused(tmp_path, monkeypatch):
    # tests run as root, whom permission bits do not stop: a read-only folder is a folder where creating fails
    import dldoctor.fileops as fileops

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileops.tempfile, "mkstemp", read_only)
    BUILT.clear()
    refused(invoke("inspect", SPEC, "-s", "1,8", "-o", tmp_path / "r.json"), "cannot write", "Permission denied")
    refused(invoke("compress", SPEC, "-s", "1,8", "-o", tmp_path), "cannot write")
    assert BUILT == []


def test_compress_output_folder_checks(model, tmp_path):
    before = sha(model)
    refused(invoke("compress", model, "-o", model), "never writes over its inputs")
    refused(invoke("compress", model, "-o", model.parent), "beside or over the input")
    (tmp_path / "taken").write_text("x")
    refused(invoke("compress", model, "-o", tmp_path / "taken"), "is a file, not a folder")
    refused(invoke("compress", model, "-o", tmp_path / "taken" / "sub"), "is a file, not a folder")
    # the default folder beside the input is checked too
    (tmp_path / "model_pt.dldoctor-compressed").write_text("x")
    refused(invoke("compress", model), "model_pt.dldoctor-compressed", "not a folder")
    assert sha(model) == before and (tmp_path / "taken").read_text() == "x"


def test_write_baseline_and_report_outputs(model, tmp_path):
    before = sha(model)
    refused(invoke("check", model, "--write-baseline", model), "--write-baseline", "never writes over")
    base = tmp_path / "base.json"
    r = invoke("check", model, "--write-baseline", base)
    assert r.exit_code == 0, r.output
    # -o over the baseline the run reads is refused; refreshing the baseline in place is allowed
    refused(invoke("check", model, "--baseline", base, "-o", base), "never writes over")
    r = invoke("check", model, "--baseline", base, "--write-baseline", base)
    assert r.exit_code == 0, r.output
    code = tmp_path / "mine.py"
    code.write_text("X = 1\n")
    refused(invoke("inspect", model, "--code", code, "-o", code), "never writes over")
    assert code.read_text() == "X = 1\n" and sha(model) == before


def test_missing_folders_are_made_only_when_the_output_is_written(model, tmp_path):
    out = tmp_path / "ci" / "reports" / "r.json"
    check_output_path(out, [model])
    assert not (tmp_path / "ci").exists()  # the check makes nothing
    r = invoke("inspect", model, "-f", "json", "-o", out)
    assert r.exit_code == 0 and out.read_text().lstrip().startswith("{"), r.output


def test_a_link_is_written_through(model, tmp_path):
    real = tmp_path / "reports" / "today.json"
    real.parent.mkdir()
    link = tmp_path / "latest.json"
    os.symlink(real, link)
    r = invoke("inspect", model, "-f", "json", "-o", link)
    assert r.exit_code == 0, r.output
    assert os.path.islink(link) and real.read_text().lstrip().startswith("{")


def test_check_output_path_unit(tmp_path):
    f = tmp_path / "in.pt"
    f.write_bytes(b"x")
    check_output_path(tmp_path / "new.json", [f, "torchvision.models:resnet18", None])
    check_output_path(tmp_path / "new_dir", [f], kind="folder")
    check_output_path(tmp_path / "in.pt.json", [f])
    with pytest.raises(OutputPathError, match="never writes over"):
        check_output_path(str(f), [f])
    with pytest.raises(OutputPathError, match="--write-baseline"):
        check_output_path(str(f), [f], flag="--write-baseline")
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_path(tmp_path, [])
    with pytest.raises(OutputPathError, match="not a folder"):
        check_output_path(f, [], kind="folder")
    for stream in ("/dev/null", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        with pytest.raises(OutputPathError, match="device or a stream") as e:
            check_output_path(stream, [])
        assert "omit -o" in e.value.hint
