"""--max-input-bytes: synthetic inputs (from --input-shape, or an ONNX graph's declared dimensions) are checked
against a memory budget before anything is allocated: one error line naming the input, its shape, its bytes and
the flag, not a 10 GB allocation."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.collect.inputs import InputBudgetError, check_input_bytes, input_budget, make_inputs, max_input_bytes

runner = CliRunner()
HUGE = "1,3,30000,30000"  # 10.8e9 bytes of float32
FAST = {"probe": ["--steps", "2", "--no-attribution"], "profile": ["--iters", "2", "--warmup", "1", "--no-whatifs"],
        "compress": ["--iters", "2", "-t", "torch-fp16"]}


def conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def no_alloc(monkeypatch):
    """Any attempt to make the huge tensor fails the test instead of eating 10 GB."""
    real = torch.randn

    def guarded(*shape, **kw):
        dims = shape[0] if len(shape) == 1 and isinstance(shape[0], (list, tuple, torch.Size)) else shape
        n = 1
        for d in dims:
            n *= int(d)
        assert n < 10**8, f"allocated an input of {n} elements"
        return real(*shape, **kw)

    monkeypatch.setattr(torch, "randn", guarded)


@pytest.mark.parametrize("cmd", ["inspect", "check", "probe", "profile", "compress"])
def test_a_huge_input_shape_is_one_line_before_allocation(cmd, tmp_path, monkeypatch):
    no_alloc(monkeypatch)
    args = [cmd, "tests.api.test_input_budget:conv", "-s", HUGE, "-q", *FAST.get(cmd, [])]
    if cmd == "compress":
        args += ["-o", str(tmp_path / "v")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("dldoctor: error:")]
    assert len(errors) == 1, r.output
    line = errors[0]
    for word in ("1x3x30000x30000", "10,800,000,000 bytes", "--max-input-bytes"):
        assert word in line, line
    assert "internal error" not in r.output and "Traceback" not in r.output
    assert not (tmp_path / "v").exists()


def test_the_budget_is_a_flag(monkeypatch):
    no_alloc(monkeypatch)
    r = runner.invoke(app, ["inspect", "tests.api.test_input_budget:conv", "-s", "1,3,64,64", "-q", "--no-rules",
                            "--max-input-bytes", "10KB"])
    assert r.exit_code == 2 and "49,152 bytes" in r.output and "10 KiB" not in r.output, r.output
    r = runner.invoke(app, ["inspect", "tests.api.test_input_budget:conv", "-s", "1,3,64,64", "-q", "--no-rules",
                            "--max-input-bytes", "1MiB"])
    assert r.exit_code == 0, r.output
    for bad in ("lots", "0", "-5MB"):
        r = runner.invoke(app, ["inspect", "tests.api.test_input_budget:conv", "--max-input-bytes", bad])
        assert r.exit_code == 2 and "--max-input-bytes" in r.output and "internal error" not in r.output, r.output
    assert max_input_bytes() == 1 << 30  # nothing leaks out of a run


def test_onnx_declared_dims_are_checked_before_allocation(tmp_path, monkeypatch):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 30000, 30000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 30000, 30000])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["pixels"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "big.onnx"
    onnx.save(model, str(p))
    real = np.random.default_rng

    class Guarded:
        def __init__(self, g):
            self.g = g

        def standard_normal(self, size=None, *a, **k):
            assert size is None or int(np.prod(size)) < 10**8, f"allocated {size}"
            return self.g.standard_normal(size, *a, **k)

        def __getattr__(self, name):
            return getattr(self.g, name)

    def guarded(*a, **k):
        return Guarded(real(*a, **k))

    monkeypatch.setattr(np.random, "default_rng", guarded)
    no_alloc(monkeypatch)
    for cmd in ("profile", "compress"):
        args = [cmd, str(p), "-q", *FAST[cmd]]
        if cmd == "compress":
            args = [cmd, str(p), "-q", "--iters", "2", "-t", "onnx-optimized", "-o", str(tmp_path / "v")]
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "30000x30000" in r.output and "--max-input-bytes" in r.output, r.output
        assert "internal error" not in r.output


def test_check_input_bytes_unit():
    check_input_bytes([("x", [1, 3, 224, 224], "float32", 4)])
    with pytest.raises(InputBudgetError, match="'ids' of shape 8x4096"):
        with input_budget(1000):
            check_input_bytes([("input 'ids'", [8, 4096], "int64", 8), ("input 'mask'", [8, 4096], "bool", 1)])
    with input_budget(None):
        check_input_bytes([("x", [10**6, 10**6], "float32", 4)])
    with input_budget(100):
        with pytest.raises(InputBudgetError):
            make_inputs(conv(), [[1, 3, 8, 8]])
    assert max_input_bytes() == 1 << 30


def test_inspect_batch_sizes_are_checked_before_the_copies_are_made(tmp_path):
    """--batch-sizes makes a copy of the input at each size: a huge size is refused before it is made."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dldoctor", "inspect", "torch.nn:Linear(4, 4)", "-s", "1,4",
                        "--batch-sizes", "1,100000000000", "--no-rules"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert "--batch-sizes 100000000000" in r.stderr and "--max-input-bytes" in r.stderr
    assert r.stderr.count("dldoctor: error:") == 1 and "Traceback" not in r.stderr
