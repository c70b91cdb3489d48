"""Files far larger than memory should be cheap to inspect: an ONNX model over protobuf's 2 GB limit with
external data, and a 7B-parameter safetensors file. Both are described from headers, never read into memory.

The weights are sparse files (truncate), so the tests cost no disk; what they prove is that the loaders check
locations and lengths without pulling the data into memory. (Files over 4 GiB get no sha256 unless --hash:
hashing reads every byte, 12.5 s for the 13.5 GB file here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
K, N = 1024, 540_000  # W is K*N float32 = 2.21e9 bytes, past the 2 GiB protobuf limit


def big_model(folder: Path, location: str = "w.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[K, N], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", str(K * N * 4))):
        w.external_data.add(key=k, value=v)
    with open(folder / "w.bin", "wb") as f:
        f.truncate(K * N * 4)  # sparse: reads as zeros
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                          "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])], initializer=[w])
    path = folder / "big.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent at fork (pytest's own gigabytes),
# while exec starts a new address space whose high-water mark is this process's alone
RUN = """
import json, re, sys
from typer.testing import CliRunner
from dldoctor.cli import app
r = CliRunner().invoke(app, ["inspect", sys.argv[1], "--format", "json", "-q"])
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"code": r.exit_code, "out": r.stdout, "rss_mb": hwm / 1024}))
"""


def test_inspect_over_2gb_external_data_reads_headers_only(tmp_path):
    path = big_model(tmp_path / "m")
    before = os.stat(path).st_mtime_ns, os.stat(tmp_path / "m" / "w.bin").st_mtime_ns
    p = subprocess.run([sys.executable, "-c", RUN, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["code"] == 0, res["out"][-2000:]
    rep = json.loads(res["out"])
    assert rep["params"]["total"] == K * N
    assert rep["params"]["bytes"] == K * N * 4 > 2**31
    assert rep["flops"]["macs"] == K * N and rep["flops"]["status"] == "complete"  # batch 1
    assert any("external data" in d["message"] and "not read" in d["message"] for d in rep["diagnostics"])
    # reading 2.2 GB of weights would put the peak above it; headers only stay at the interpreter + torch
    assert res["rss_mb"] < 1500, res["rss_mb"]
    assert (os.stat(path).st_mtime_ns, os.stat(tmp_path / "m" / "w.bin").st_mtime_ns) == before


def test_over_2gb_escape_is_still_refused(tmp_path):
    from dldoctor.errors import UnsafeModelError
    from dldoctor.load import load

    (tmp_path / "outside").mkdir()
    big_model(tmp_path / "outside")
    path = big_model(tmp_path / "m", location="../outside/w.bin")
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        load(str(path))


def test_7b_safetensors_is_described_from_its_header(tmp_path):
    """A Llama-7B-shaped safetensors file (13.5 GB of bf16, sparse here): tensors, parameter count and size
    from the header alone; memory stays at the interpreter's, not the file's."""
    import torch

    from sample_models.llama import analytic, llama, write_sparse_safetensors

    path = tmp_path / "llama7b.safetensors"
    off = write_sparse_safetensors(str(path), "7b", "BF16")
    with torch.device("meta"):
        sd = llama("7b").state_dict()
    p = subprocess.run([sys.executable, "-c", RUN, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["code"] == 0, res["out"][-2000:]
    rep = json.loads(res["out"])
    assert rep["params"]["total"] == analytic("7b", tokens=1)[0] == sum(t.numel() for t in sd.values())
    assert rep["params"]["bytes"] == off and rep["params"]["by_dtype"] == {"bfloat16": off // 2}
    assert rep["flops"]["status"] == "unavailable"  # no architecture given: said, not zero
    assert res["rss_mb"] < 1500, res["rss_mb"]
    # 13.5 GB is over the hashing limit: no sha256, and the report says why and how to get one
    assert rep["model"]["sha256"] is None
    assert any("sha256 not computed" in d["message"] and "--hash" in d["message"] for d in rep["diagnostics"])
