"""The command line: exit codes, one-line errors, JSON contract, atomic output."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.report.types import Report

runner = CliRunner()


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture()
def cnn_file(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    p = tmp_path / "cnn.pt"
    torch.save(m, p)
    return p


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and r.output.startswith("dldoctor ")
    r = run("--help")
    assert r.exit_code == 0 and "inspect" in r.output


def test_help_does_not_import_torch():
    code = "import sys; from dldoctor.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


SHARED_FLAGS = {"--input-shape", "--dtype", "--input-dtype", "--device", "--arch", "--allow-class", "--code", "--trust",
                "--hash", "--format", "--output", "--quiet", "--config", "--timeout", "--max-input-bytes", "--loss",
                "--batch-sizes", "--select", "--extend-select", "--ignore", "--fail-on"}


def test_shared_options_are_declared_once():
    """The flags several commands take are spelled only in cli/options.py (as Annotated aliases), every command
    builds its LoadOptions with options.load_options, and no command module imports another command's."""
    import ast
    import pathlib

    import dldoctor.cli

    folder = pathlib.Path(dldoctor.cli.__file__).parent
    commands = {"check", "compress", "config", "diff", "inspect", "probe", "profile", "rules"}
    bad = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "options.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                flags = {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
                if name == "Option" and flags & SHARED_FLAGS:
                    bad.append(f"{path.name}:{node.lineno} declares {sorted(flags & SHARED_FLAGS)}")
                if name == "LoadOptions":
                    bad.append(f"{path.name}:{node.lineno} builds LoadOptions itself")
            if isinstance(node, ast.ImportFrom) and path.stem in commands:
                mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                if any(m.startswith("dldoctor.cli.") and m.rsplit(".", 1)[1] in commands - {path.stem} for m in mods):
                    bad.append(f"{path.name}:{node.lineno} imports another command's module")
    assert not bad, "\n".join(bad)


def test_inspect_rich(cnn_file):
    before = sha(cnn_file)
    r = run("inspect", cnn_file, "--input-shape", "1,3,32,32")
    assert r.exit_code == 0, r.output
    assert "parameters" in r.output and "MACs" in r.output
    assert sha(cnn_file) == before


def test_inspect_json_contract(cnn_file, tmp_path):
    out = tmp_path / "report.json"
    r = run("inspect", cnn_file, "-s", "1,3,32,32", "--format", "json", "-o", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    for key in ("schema_version", "model", "inputs", "params", "flops", "memory", "receptive_field", "layers", "findings", "diagnostics"):
        assert key in doc, key
    assert doc["model"]["sha256"] == sha(cnn_file)
    assert doc["model"]["format"] == "torch-module"
    for key in ("status", "macs", "flops", "training_flops", "uncounted_ops"):
        assert key in doc["flops"]
    for key in ("params_bytes", "inference_peak_bytes", "training_peak_bytes"):
        assert key in doc["memory"]
    for key in ("status", "size", "stride", "global"):
        assert key in doc["receptive_field"]
    for key in ("path", "type", "output_shape", "params", "macs", "receptive_field"):
        assert key in doc["layers"][0]
    # hand count: conv1 32*32*8*27, conv2 16*16*16*72, fc 160
    assert doc["flops"]["macs"] == 32 * 32 * 8 * 27 + 16 * 16 * 16 * 72 + 160
    assert doc["inputs"] == [{"shape": [1, 3, 32, 32], "dtype": "float32", "assumed": False}]
    # round trip, and identical across two runs
    assert Report.from_dict(doc).to_dict() == doc
    r2 = run("inspect", cnn_file, "-s", "1,3,32,32", "--format", "json")
    assert json.loads(r2.stdout) == doc
    _assert_plain(doc)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def _assert_plain(x):
    if isinstance(x, dict):
        for v in x.values():
            _assert_plain(v)
    elif isinstance(x, list):
        for v in x:
            _assert_plain(v)
    else:
        assert x is None or isinstance(x, (str, int, float, bool)), type(x)


def test_several_models_give_reports_list(cnn_file, tmp_path):
    other = tmp_path / "mlp.pt"
    torch.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), other)
    r = run("inspect", tmp_path, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] and len(doc["reports"]) == 2


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "no such file"),
        (b"", "empty"),
        (os.urandom(4096), "not a model"),
        (b"hello, I am a text file\n" * 10, "not a model"),
    ],
    ids=["missing", "empty", "random", "text"],
)
def test_bad_files_exit_2_with_one_line(tmp_path, content, expect):
    p = tmp_path / "model.pt"
    if content is not None:
        p.write_bytes(content)
    r = run("inspect", p)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    first = r.output.strip().splitlines()[0]
    assert first.startswith("dldoctor: error:")
    assert expect in r.output.lower()
    if content is not None:
        assert p.read_bytes() == content


def test_truncated_file_exit_2(cnn_file):
    data = cnn_file.read_bytes()
    for cut in (10, len(data) // 3, len(data) - 20):
        cnn_file.write_bytes(data[:cut])
        r = run("inspect", cnn_file)
        assert r.exit_code == 2, (cut, r.output)
        assert "Traceback" not in r.output


def test_wrong_input_shape_exit_2_with_partial_report(cnn_file):
    r = run("inspect", cnn_file, "--input-shape", "1,1,32,32", "--format", "json")
    assert r.exit_code == 2
    assert "forward pass failed" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["flops"]["status"] in ("partial", "unavailable")


def test_bad_shape_text_exit_2(cnn_file):
    r = run("inspect", cnn_file, "--input-shape", "1,three,32")
    assert r.exit_code == 2 and "bad input shape" in r.output


def test_pickle_that_wants_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    r = run("inspect", p)
    assert r.exit_code == 2
    assert "system" in r.output  # names the offending global
    assert "--trust" in r.output
    assert not marker.exists()


def test_factory_spec_and_meta_device():
    r = run("inspect", "torch.nn:Linear(16, 4)", "--device", "meta", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["params"]["total"] == 16 * 4 + 4
    assert doc["flops"]["macs"] == 16 * 4
    assert doc["inputs"][0]["assumed"] is True


def test_debug_env_shows_traceback(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"garbage")
    env = {**os.environ, "DLDOCTOR_DEBUG": "1"}
    out = subprocess.run([sys.executable, "-m", "dldoctor", "inspect", str(p)], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "Traceback" in out.stderr


def test_state_dict_without_and_with_arch(tmp_path):
    m = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    p = tmp_path / "sd.pt"
    torch.save(m.state_dict(), p)
    r = run("inspect", p, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["params"]["total"] == sum(x.numel() for x in m.parameters())
    assert doc["flops"]["status"] == "unavailable" and "--arch" in doc["flops"]["reason"]
    assert doc["flops"]["macs"] is None  # never a silent 0
    r = run("inspect", p, "--arch", "sample_models.zoo:mlp", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["flops"]["macs"] == 784 * 64 + 64 * 64 + 64 * 10


def test_wrong_arch_exit_2(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save(nn.Linear(3, 3).state_dict(), p)
    r = run("inspect", p, "--arch", "sample_models.zoo:mlp")
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = run("inspect", p, "--arch", "no_such_pkg.mod:f")
    assert r.exit_code == 2 and "Traceback" not in r.output
