"""Code from the working folder never shadows an installed package. A model repository may hold a captum.py or an
onnxruntime.py; run there, dldoctor must import the real packages, while the user's own module (`mymodels:build`,
`./mymodels.py:build`, `--code ./mymodels.py`, `--allow-class mymodels.Net`) is still found. Each canary module
writes a marker file when imported."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dldoctor.errors import LoadError
from dldoctor.load.factory import build, import_module, is_spec, parse_spec

CANARIES = ("captum", "onnxruntime", "torch_pruning", "transformers", "onnx", "typer", "rich", "safetensors", "timm")
PY = Path(sys.executable)
CONSOLE = PY.parent / "dldoctor"

MYMODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def build(width=8):
    return Net(width)
'''


@pytest.fixture()
def repo(tmp_path):
    """A downloaded 'model repository': canaries named like dldoctor's dependencies, and the user's module."""
    d = tmp_path / "repo"
    d.mkdir()
    for name in CANARIES:
        (d / f"{name}.py").write_text(f"open({str(d / ('FIRED_' + name))!r}, 'w').write('imported')\n")
    (d / "mymodels.py").write_text(MYMODELS)
    return d


def fired(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("FIRED_*"))


def entry(kind: str) -> list[str]:
    return [str(PY), "-m", "dldoctor"] if kind == "module" else [str(CONSOLE)]


def run_all(d: Path, runs: list[tuple[str, list[str]]]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["DLDOCTOR_DEBUG"] = "1"
    procs = []
    for i in range(0, len(runs), 2):  # two at a time: each imports torch
        batch = [(kind, args, subprocess.Popen([*entry(kind), *args], cwd=d, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)) for kind, args in runs[i:i + 2]]
        for kind, args, p in batch:
            out, _ = p.communicate(timeout=300)
            procs.append((kind, args, p.returncode, out))
    for kind, args, code, out in procs:
        assert code in (0, 1), f"{kind} {' '.join(args)} -> {code}\n{out[-3000:]}"
    assert fired(d) == [], f"imported from the working folder: {fired(d)}"


SHAPE = ["-s", "1,3,16,16", "-q"]


def test_python_m_and_console_script_do_not_import_the_working_folder(repo):
    run_all(repo, [
        ("module", ["inspect", "mymodels:build", *SHAPE]),
        ("console", ["compress", "./mymodels.py:build(width=4)", *SHAPE, "-t", "fold-conv-bn", "--iters", "3",
                     "-o", "out"]),
    ])


@pytest.mark.slow
def test_every_command_both_entries_both_spec_forms(repo):
    import torch

    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodels", repo / "mymodels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mymodels"] = mod
    try:
        spec.loader.exec_module(mod)
        torch.save(mod.build(), repo / "net.pt")  # a pickled model whose class lives in mymodels
    finally:
        sys.modules.pop("mymodels", None)
    fast = {"probe": ["--steps", "2", "--batch-size", "2"], "profile": ["--iters", "3", "--warmup", "1"],
            "compress": ["-t", "fold-conv-bn", "--iters", "3"]}
    runs = []
    for i, cmd in enumerate(("inspect", "check", "probe", "profile", "compress")):
        for j, src in enumerate(("mymodels:build", "./mymodels.py:build")):
            kind = ("module", "console")[(i + j) % 2]
            extra = ["-o", f"out-{cmd}-{j}"] if cmd == "compress" else []
            runs.append((kind, [cmd, src, *SHAPE, *fast.get(cmd, []), *extra]))
    runs.append(("module", ["inspect", "net.pt", "--code", "./mymodels.py", *SHAPE]))
    runs.append(("console", ["check", "net.pt", "--allow-class", "mymodels.Net", *SHAPE]))
    run_all(repo, runs)


# -- in-process: how the user's module is found -------------------------------------------------------------------


@pytest.fixture()
def in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != str(repo)])
    for name in [n for n in sys.modules if n == "mymodels" or n.startswith("_dldoctor_user_")]:
        monkeypatch.delitem(sys.modules, name)
    yield repo
    for name in [n for n in sys.modules if n == "mymodels" or n.startswith("_dldoctor_user_")]:
        sys.modules.pop(name, None)


def test_a_dotted_spec_appends_the_folder_after_site_packages(in_repo):
    front = list(sys.path[:3])
    module, name = build("mymodels:build(width=4)")
    assert name == "build" and module.conv.out_channels == 4
    assert sys.path[:3] == front and sys.path[-1] == str(in_repo)
    import importlib.util

    for dep in ("captum", "onnxruntime", "onnx", "typer", "rich"):
        origin = importlib.util.find_spec(dep).origin
        assert not origin.startswith(str(in_repo)), (dep, origin)
    assert fired(in_repo) == []


def test_a_path_spec_imports_that_file(in_repo):
    assert is_spec("./mymodels.py:build") and is_spec("sub/dir/file.py:build(depth=2)")
    assert parse_spec("./mymodels.py:build(width=4)") == ("./mymodels.py", "build", (), {"width": 4})
    module, _ = build("./mymodels.py:build(width=4)")
    assert type(module).__module__ == "mymodels" and module.conv.out_channels == 4
    again, _ = build(f"{in_repo}/mymodels.py:build")
    assert type(again) is type(module)  # the same file is imported once
    # a file named like an installed package is imported under a name of its own, never in the package's place
    (in_repo / "sub").mkdir()
    (in_repo / "sub" / "rich.py").write_text(MYMODELS)
    import rich

    other, _ = build("sub/rich.py:build")
    assert type(other).__module__.startswith("_dldoctor_user_rich_") and sys.modules["rich"] is rich
    assert sys.path[0] != str(in_repo / "sub")
    with pytest.raises(LoadError, match="no such file"):
        build("./nope.py:build")
    assert fired(in_repo) == []


def test_an_installed_module_wins_and_the_hint_says_so(in_repo):
    (in_repo / "typer.py").write_text("def build():\n    pass\n")
    with pytest.raises(LoadError) as e:
        build("typer:build")
    assert "./typer.py:" in e.value.hint and "installed" in e.value.hint
    assert not fired(in_repo)


def test_code_file_folder_is_appended(in_repo):
    from dldoctor.load.torch_pickle import _import_code

    (in_repo / "lib").mkdir()
    (in_repo / "lib" / "helpers.py").write_text("X = 1\n")
    mod = _import_code("lib/helpers.py")
    assert mod.X == 1 and sys.path[0] != str(in_repo / "lib") and str(in_repo / "lib") in sys.path
    import_module("mymodels", "test")
    assert sys.path[0] != str(in_repo)


def test_python_m_never_imports_standard_library_names_from_the_working_folder(repo):
    """`python -m dldoctor` imports the package before __main__ runs: a typing.py or dataclasses.py lying in the
    working folder must not stand in for the standard library (the hostile corpus found typing.py run)."""
    for name in ("typing", "dataclasses", "enum", "json", "contextvars"):
        (repo / f"{name}.py").write_text(f"open({str(repo / ('FIRED_' + name))!r}, 'w').write('imported')\n")
    run_all(repo, [("module", ["--help"]), ("module", ["inspect", "mymodels:build", *SHAPE, "--no-rules"])])
