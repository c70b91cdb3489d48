"""Small files must not buy large costs (issue 12, section 1): every hostile file here is a few KB to a few MB
and is refused in one line (exit 2) or described, within seconds and within the memory budget (peak RSS under
1.5 GiB, the interpreter and torch included). The limits live in dldoctor/load/limits.py.

The files are built here from raw bytes. Commands that could hang or eat memory without the limits run in a
child process with a timeout and an address-space cap (so a regression fails the test instead of the machine);
peak RSS is the child's VmHWM, reset before each command (see tests/e2e/test_large_files.py for why not ru_maxrss).
"""
from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from dldoctor.errors import LoadError
from dldoctor.load import load
from dldoctor.load.limits import LIMITS, Limits, ResourceLimitError
from dldoctor.load.pickle_scan import PickleLimitError, list_tensors, scan

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MB = 1536

# Runs dldoctor commands in one child: {args, code, out, rss_mb, secs} per command, printed as JSON lines as
# they finish (a crash still leaves the earlier lines). The address space is capped so that a regression
# (a 10 GB allocation) fails inside the child instead of taking the machine's memory.
RUN = """
import json, re, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from typer.testing import CliRunner
from dldoctor.cli import app
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
for args in json.loads(sys.argv[1]):
    open("/proc/self/clear_refs", "w").write("5")  # peak RSS from here on
    t = time.time()
    r = CliRunner().invoke(app, args)
    print(json.dumps({"args": args, "code": r.exit_code, "out": r.output, "rss_mb": hwm(), "secs": time.time() - t}), flush=True)
"""


def run_cli(*commands: list[str], timeout: float = 240) -> list[dict]:
    try:
        p = subprocess.run([sys.executable, "-c", RUN, json.dumps(commands)], capture_output=True, text=True,
                           cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dldoctor {commands} did not finish in {timeout} s (hang)")
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert p.returncode == 0 and len(results) == len(commands), (
        f"child ended with {p.returncode} (negative: killed by that signal) after {len(results)} of {len(commands)} "
        f"commands; stderr: {p.stderr[-2000:]}")
    return results


def assert_refused(res: dict, *words: str) -> None:
    out = res["out"]
    assert res["code"] == 2, (res["args"], out[-2000:])
    assert "Traceback" not in out and "internal error" not in out, out[-2000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("dldoctor: error:")]
    assert len(errors) == 1 and "refused" in errors[0], out[-2000:]
    for w in words:
        assert w in errors[0], (w, errors[0])


def assert_bounded(res: dict, secs: float = 30) -> None:
    assert res["rss_mb"] < BUDGET_MB, (res["args"], res["rss_mb"])
    assert res["secs"] < secs, (res["args"], res["secs"])


# ---------------------------------------------------------------------------
# builders


def torch_zip(path: Path, data_pkl: bytes, compress: int = zipfile.ZIP_STORED, records: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl, compress_type=compress)
        for name, data in (records or {}).items():
            z.writestr(f"archive/{name}", data)
        z.writestr("archive/version", "3\n")
    return path


def torch_legacy(path: Path, obj_pickle: bytes) -> Path:
    """torch's legacy (non-zip) stream: magic, protocol, sys info, the object, the storage keys."""
    b = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                               "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, b, protocol=2)
    b.write(obj_pickle)
    pickle.dump([], b, protocol=2)
    path.write_bytes(b.getvalue())
    return path


def deep_tuple_key(n: int = 1_000_000) -> bytes:
    """{((((...(),)...),): 0}: a dict whose key is a tuple nested n deep (EMPTY_TUPLE, then TUPLE1 n times).
    torch's weights-only unpickler builds it and then hashes it recursively in C: signal 11."""
    return b"\x80\x02}" + b")" + b"\x85" * n + b"K\x00s."


def shared_list_dag() -> dict:
    """A list referenced 16 times per level, 22 levels deep: 16**22 paths to one tensor, a 2 KB file."""
    a: list = [torch.zeros(1)]
    for _ in range(22):
        a = [a] * 16
    return {"x": a}


def write_safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


# ---------------------------------------------------------------------------
# pickle object graphs


def test_shared_list_dag_does_not_hang(tmp_path):
    p = tmp_path / "dag.pt"
    torch.save(shared_list_dag(), p)
    assert p.stat().st_size < 4096
    for res in run_cli(["inspect", str(p), "-q"], ["check", str(p), "-q"], timeout=180):
        assert res["code"] in (0, 1, 2) and "Traceback" not in res["out"], res["out"][-2000:]
        assert_bounded(res)


def test_walks_visit_a_shared_container_once():
    from dldoctor.load.statedict import flatten_tensors

    a: list = [torch.zeros(1)]
    for _ in range(5):  # 16**5 = 1M paths
        a = [a] * 16
    t = time.time()
    flat = flatten_tensors({"x": a})
    assert list(flat) == ["x" + ".0" * 6] and time.time() - t < 2
    # the same shape as the pickle scan sees it, 22 levels deep
    b: list = [1]
    for _ in range(22):
        b = [b] * 16
    root = scan(pickle.dumps({"x": b}, protocol=2)).root
    assert list_tensors(root) == []


def test_walks_have_a_node_budget_and_a_depth_limit():
    from dldoctor.load.statedict import flatten_tensors

    with pytest.raises(ResourceLimitError, match=r"the checkpoint has more than 1000 nodes \(limit 1000\)"):
        flatten_tensors({"x": list(range(5000))}, Limits(walk_nodes=1000))
    deep: object = torch.zeros(1)
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ResourceLimitError, match=r"the checkpoint nests 201 levels deep \(limit 200\)"):
        flatten_tensors({"x": deep})


@pytest.mark.parametrize("container", ["zip", "zip-deflated", "legacy"])
def test_million_deep_tuple_key_is_refused_before_torch_sees_it(tmp_path, container):
    data = deep_tuple_key()
    if container == "legacy":
        p = torch_legacy(tmp_path / "deep.pt", data)
    else:
        compress = zipfile.ZIP_DEFLATED if container == "zip-deflated" else zipfile.ZIP_STORED
        p = torch_zip(tmp_path / "deep.pt", data, compress)
    (res,) = run_cli(["inspect", str(p), "-q"], timeout=180)
    assert_refused(res, "the pickle nests at least 1001 levels deep (limit 1000)")
    assert_bounded(res)


def _nest(kind: str, n: int) -> bytes:
    """n levels of one container kind, in raw opcodes (protocol 2 unless said)."""
    if kind == "tuple1":
        return b"\x80\x02)" + b"\x85" * n + b"."
    if kind == "mark-tuple":  # ( ( ( ... ) ) )
        return b"\x80\x02" + b"(" * n + b"t" * n + b"."
    if kind == "mark-list":
        return b"\x80\x02" + b"(" * n + b"l" * n + b"."
    if kind == "open-marks":  # MARKs never closed
        return b"\x80\x02" + b"(" * n + b"N."
    if kind == "append":  # [[[...]]] built with EMPTY_LIST ... APPEND from the inside out
        return b"\x80\x02" + b"]" * (n + 1) + b"a" * n + b"."
    if kind == "setitem":  # {"k": {"k": ...}}
        return b"\x80\x02" + b"}X\x01\x00\x00\x00k" * n + b"}" + b"s" * n + b"."
    if kind == "reduce":  # f((f((...),)),): two levels (call, argument tuple) per call
        return b"\x80\x02" + b"cbuiltins\nlist\n" * (n // 2) + b")" + b"\x85R" * (n // 2) + b"."
    if kind == "memo":  # a tuple, memoized, wrapped, memoized... via BINPUT/BINGET
        return b"\x80\x02)q\x00" + b"h\x00\x85q\x00" * n + b"."
    if kind == "persid":  # persistent ids wrapping one another
        return b"\x80\x02N" + b"Q" * n + b"."
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["tuple1", "mark-tuple", "mark-list", "open-marks", "append", "setitem", "reduce",
                                  "memo", "persid"])
def test_pickle_nesting_is_counted_for_every_container_kind(kind):
    scan(_nest(kind, 900))  # under the limit: fine
    with pytest.raises(PickleLimitError, match=r"nests at least 1001 levels deep.*\(limit 1000\)"):
        scan(_nest(kind, 5000))


def test_pickle_opcode_budget():
    data = b"\x80\x02(" + b"K\x01" * 3000 + b"l."
    assert len(scan(data).root) == 3000
    with pytest.raises(PickleLimitError, match=r"more than 1000 opcodes \(limit 1000\)"):
        scan(data, limits=Limits(pickle_ops=1000))
    assert LIMITS.pickle_ops >= 1_000_000  # a ConvNeXt-B full module is 51k opcodes


def test_deep_bare_pickle_is_refused_by_name(tmp_path):
    p = tmp_path / "deep.pkl"
    p.write_bytes(_nest("tuple1", 100_000))
    with pytest.raises(ResourceLimitError, match="deep.pkl: refused: the pickle nests at least 1001"):
        load(str(p))


# ---------------------------------------------------------------------------
# expanded tensors


def _expanded_module() -> torch.nn.Module:
    m = torch.nn.Linear(50000, 50000, bias=False, device="meta")
    m.weight = torch.nn.Parameter(torch.zeros(1).expand(50000, 50000))  # 1 stored float posing as 2.5e9
    return m


def test_stride_zero_tensor_is_never_materialised(tmp_path):
    files = {
        "sd.pt": {"w": torch.zeros(1).expand(50000, 50000)},
        "strided.pt": {"w": torch.zeros(1).as_strided((50000, 50000), (0, 0))},
        "ckpt.pt": {"weights": {"a": [torch.ones(50000, 1).expand(50000, 50000)]}},  # no known key
        "module.pt": _expanded_module(),
    }
    paths = []
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        assert (tmp_path / name).stat().st_size < 256 << 10
        paths.append(str(tmp_path / name))
    cmds = [[c, p, "-q"] for p in paths for c in ("inspect", "check")]
    cmds.append(["probe", paths[-1], "--steps", "1", "-q"])
    for res in run_cli(*cmds, timeout=300):
        assert_refused(res, "is an expanded view of", "stored elements posing as 2500000000")
        assert_bounded(res)


def test_small_expanded_views_still_load(tmp_path):
    """position_ids-style buffers (arange(n).expand(1, -1)) and small repeats are no threat: they load."""
    p = tmp_path / "sd.pt"
    torch.save({"pos": torch.arange(512).expand(1, -1), "rep": torch.ones(4).expand(1000, 4)}, p)
    r = load(str(p))
    assert {t.name: t.shape for t in r.tensors} == {"pos": [1, 512], "rep": [1000, 4]}


def test_expanded_view_limit_names_the_figures(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2).expand(5000, 5000, 2)}, p)
    with pytest.raises(ResourceLimitError) as e:
        load(str(p))
    assert e.value.message == (f"{p}: refused: tensor 'w' is an expanded view of 2 stored elements posing as 50000000 "
                               f"(199999992 bytes more than it stores; limit {LIMITS.expanded_view_bytes})")


def test_weight_statistics_are_taken_over_stored_elements():
    from dldoctor.collect.weights import weight_stats

    torch.manual_seed(0)
    base = torch.randn(3, 1, 5)
    base[0, 0, 0] = 0.0
    views = [base.expand(3, 4, 5), torch.randn(1, 6).expand(4, 6), torch.randn(4, 1).expand(4, 6),
             torch.tensor([float("nan"), 1.0, 0.0]).expand(5, 3)]
    for v in views:
        got = weight_stats(_Holder(v))[0].__dict__
        want = weight_stats(_Holder(v.contiguous()))[0].__dict__
        for k in want:
            same = got[k] == pytest.approx(want[k], rel=1e-5) if isinstance(want[k], float) else got[k] == want[k]
            assert same, (list(v.shape), v.stride(), k, got[k], want[k])


class _Holder(torch.nn.Module):
    def __init__(self, t: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(t, requires_grad=False)


WEIGHTS = """
import json, re, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import torch
from dldoctor.collect.weights import weight_stats
m = torch.nn.Module()
m.w = torch.nn.Parameter(torch.zeros(1).expand(50000, 50000), requires_grad=False)
open("/proc/self/clear_refs", "w").write("5")
(s,) = weight_stats(m)
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
print(json.dumps({"zeros": s.zeros, "dead": s.dead_rows, "dup": s.duplicate_rows, "rss_mb": hwm}))
"""


def test_weight_statistics_of_a_huge_expanded_view_allocate_nothing():
    p = subprocess.run([sys.executable, "-c", WEIGHTS], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["zeros"] == 2_500_000_000 and res["dead"] == 50000 and res["dup"] == 49999
    assert res["rss_mb"] < BUDGET_MB, res


# ---------------------------------------------------------------------------
# zip members


def _bomb_pkl(inflated_mib: int) -> bytes:
    """A valid data.pkl (a state_dict of one tensor) followed by zeros after its STOP opcode."""
    b = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, b)
    with zipfile.ZipFile(io.BytesIO(b.getvalue())) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return pkl + b"\x00" * (inflated_mib << 20)


def _rezip(src: bytes, path: Path, member_bytes: dict) -> Path:
    """`src` (a torch zip) with some members replaced and deflated."""
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(path, "w") as z:
        for info in zin.infolist():
            base = info.filename.split("/", 1)[1]
            if base in member_bytes:
                z.writestr(info.filename, member_bytes[base], compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
            else:
                z.writestr(info, zin.read(info))
    return path


def test_zip_bomb_data_pkl_is_refused(tmp_path):
    b = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, b)
    bomb = _rezip(b.getvalue(), tmp_path / "bomb.pt", {"data.pkl": _bomb_pkl(100)})
    assert bomb.stat().st_size < 2 << 20
    for res in run_cli(["inspect", str(bomb), "-q"], ["check", str(bomb), "-q"], timeout=180):
        assert_refused(res, "zip member 'archive/data.pkl' inflates", "(limit 200)")
        assert_bounded(res)


def test_data_pkl_is_read_within_the_inflated_cap(tmp_path):
    from dldoctor.load.common import read_member

    b = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, b)
    p = _rezip(b.getvalue(), tmp_path / "big.pt", {"data.pkl": _bomb_pkl(3)})
    with zipfile.ZipFile(p) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
        with pytest.raises(ResourceLimitError, match=r"inflates to \d+ bytes \(limit 1048576\)"):
            read_member(z, info, str(p), Limits(member_bytes=1 << 20, member_ratio=10**9))
        # a member whose declared size lies low is still cut off by the streaming read
        info.file_size = 100
        with pytest.raises((ResourceLimitError, zipfile.BadZipFile)):
            read_member(z, info, str(p), Limits(member_bytes=1 << 20, member_ratio=10**9))
    assert LIMITS.member_bytes == 64 << 20


def test_compressed_tensor_record_bomb_is_refused_before_torch_load(tmp_path):
    b = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, b)
    p = _rezip(b.getvalue(), tmp_path / "rec.pt", {"data/0": b"\x00" * (64 << 20)})
    with pytest.raises(ResourceLimitError, match=r"zip member 'archive/data/0' inflates \d+-fold"):
        load(str(p))


def test_zip_with_too_many_entries_is_refused_before_zipfile_reads_them(tmp_path, monkeypatch):
    import dldoctor.load.detect as detect

    p = tmp_path / "many.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        for i in range(50):
            z.writestr(f"archive/data/{i}", b"")
    monkeypatch.setattr(detect, "LIMITS", Limits(zip_members=20))
    with pytest.raises(ResourceLimitError, match=r"declares 51 entries \(limit 20\)"):
        load(str(p))


# ---------------------------------------------------------------------------
# safetensors


def test_huge_safetensors_header_is_refused_fast(tmp_path):
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(800_000)}
    p = write_safetensors(tmp_path / "huge.safetensors", header)
    t = time.time()
    with pytest.raises(ResourceLimitError, match=r"lists 800000 tensors \(limit 200000\)"):
        load(str(p))
    assert time.time() - t < 5
    # under the absolute cap, the count must still fit the data: 100-byte files cannot hold 50k tensors
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(50_000)}
    p = write_safetensors(tmp_path / "many.safetensors", header)
    with pytest.raises(ResourceLimitError, match=r"lists 50000 tensors for 0 bytes of data .*\(limit 4096\)"):
        load(str(p))


def test_safetensors_header_size_is_capped(tmp_path):
    p = tmp_path / "big.safetensors"
    n = LIMITS.safetensors_header_bytes + 1
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)  # sparse
    with pytest.raises(ResourceLimitError, match=rf"header is {n} bytes \(limit {n - 1}\)"):
        load(str(p))


F32x2 = {"dtype": "F32", "shape": [2]}


@pytest.mark.parametrize("header, data, match", [
    ({"a": {**F32x2, "data_offsets": [0, 8]}, "b": {**F32x2, "data_offsets": [4, 12]}}, 12, "overlap"),
    ({"a": {**F32x2, "data_offsets": [0, 8]}, "b": {**F32x2, "data_offsets": [0, 8]}}, 8, "overlap"),
    ({"a": {**F32x2, "data_offsets": [0, 80]}}, 8, "outside"),
    ({"a": {**F32x2, "data_offsets": [8, 16]}}, 8, "outside"),
    ({"a": {**F32x2, "data_offsets": [-8, 0]}}, 8, "outside"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', 8, "names 'a' twice"),
    ({"a": {"dtype": "XX", "shape": [1000000, 1000000], "data_offsets": [0, 4]}}, 4, "dtype 'XX'"),
    ({"a": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4]}}, 4, "needs 4000000000000"),
])
def test_safetensors_header_lies_are_refused(tmp_path, header, data, match):
    p = write_safetensors(tmp_path / "x.safetensors", header, b"\x00" * data)
    with pytest.raises(LoadError, match=match):
        load(str(p))


def test_unknown_safetensors_dtype_is_an_error_in_the_cli(tmp_path):
    p = write_safetensors(tmp_path / "x.safetensors",
                          {"a": {"dtype": "XX", "shape": [1000000, 1000000], "data_offsets": [0, 4]}}, b"\x00" * 4)
    from typer.testing import CliRunner

    from dldoctor.cli import app

    r = CliRunner().invoke(app, ["inspect", str(p), "--format", "json", "-q"])
    assert r.exit_code == 2 and "dtype 'XX'" in r.output and "1000000000000" not in r.output, r.output


@pytest.mark.parametrize("where", ["metadata", "entry", "top"])
def test_deeply_nested_safetensors_json_is_a_clean_refusal(tmp_path, where):
    deep = b"[" * 100_000 + b"]" * 100_000
    header = {"metadata": b'{"__metadata__": {"k": ' + deep + b"}}",
              "entry": b'{"a": {"dtype": "F32", "shape": ' + deep + b', "data_offsets": [0, 0]}}',
              "top": b'{"a": ' + deep + b"}"}[where]
    p = write_safetensors(tmp_path / "deep.safetensors", header)
    with pytest.raises(LoadError) as e:
        load(str(p))
    assert "nests" in e.value.message or "not JSON" in e.value.message, e.value.message


def test_moderately_nested_metadata_is_refused_at_the_json_depth_limit(tmp_path):
    deep = b"[" * 100 + b"]" * 100
    p = write_safetensors(tmp_path / "deep.safetensors", b'{"__metadata__": {"k": ' + deep + b"}}")
    with pytest.raises(ResourceLimitError, match=r"__metadata__ nests at least 65 levels deep \(limit 64\)"):
        load(str(p))


# ---------------------------------------------------------------------------
# ONNX


def _nested_if(depth: int):
    from onnx import TensorProto, helper

    def graph(d: int):
        c = helper.make_tensor(f"c{d}", TensorProto.FLOAT, [1], [float(d)])
        nodes = [helper.make_node("Constant", [], [f"y{d}"], value=c)]
        if d < depth:
            nodes = [helper.make_node("If", ["cond"], [f"y{d}"], then_branch=graph(d + 1), else_branch=graph(d + 1))]
        return helper.make_graph(nodes, f"g{d}", [], [helper.make_tensor_value_info(f"y{d}", TensorProto.FLOAT, [1])])

    g = graph(0)
    g.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    return helper.make_model(g)


def test_onnx_walks_have_a_depth_limit_and_a_node_budget():
    pytest.importorskip("onnx")
    from dldoctor.load.onnx_file import all_tensors

    model = _nested_if(4)
    assert len(list(all_tensors(model))) == 2**4  # each branch walked: a protobuf is a tree
    with pytest.raises(ResourceLimitError, match=r"the ONNX graph nests 3 levels deep \(limit 2\)"):
        list(all_tensors(model, Limits(onnx_depth=2)))
    with pytest.raises(ResourceLimitError, match=r"the ONNX graph has more than 10 nodes \(limit 10\)"):
        list(all_tensors(model, Limits(walk_nodes=10)))


def test_limit_flag_changes_a_limit_for_the_whole_run(tmp_path):
    """--limit NAME=VALUE: a checkpoint legitimately nested past the default is loaded when the user raises the
    limit, in this process and in check's worker processes; a bad name or value is one usage line."""
    from dldoctor.load.base import LoadOptions
    from dldoctor.load.limits import parse

    obj = {"x": torch.zeros(2)}
    for _ in range(250):  # past walk_depth (200), far below anything that could hurt
        obj = {"n": obj}
    p = tmp_path / "nested.pt"
    torch.save(obj, p)
    with pytest.raises(ResourceLimitError, match=r"\(limit 200\)"):
        load(str(p))
    loaded = load(str(p), LoadOptions(limits=parse(["walk_depth=400"])))
    assert loaded.tensors and LIMITS.walk_depth == 200  # the raised limit held for that load only
    ok, refused, jobs, bad_name, bad_value = run_cli(
        ["inspect", str(p), "-q", "--limit", "walk_depth=400"], ["inspect", str(p), "-q"],
        ["check", str(p), str(p), "-q", "--jobs", "2", "--limit", "walk-depth=400", "--select", "ARC001"],
        ["inspect", str(p), "--limit", "bogus=1"], ["inspect", str(p), "--limit", "walk_depth=-3"])
    assert ok["code"] == 0, ok
    assert_refused(refused, "(limit 200)")
    assert jobs["code"] in (0, 1) and "refused" not in jobs["out"], jobs
    for res in (bad_name, bad_value):
        assert res["code"] == 2 and res["out"].count("dldoctor: error:") == 1 and "--limit" in res["out"], res


def _call_gadget(payload: bytes, path: Path) -> Path:
    return torch_zip(path, payload)


@pytest.mark.parametrize("payload, words", [
    # builtins.bytearray is on torch's own weights-only allowlist: bytearray(2**31) is a 2 GB zeroed buffer
    (b"\x80\x02}(X\x01\x00\x00\x00wcbuiltins\nbytearray\nJ\x00\x00\x00\x7f\x85Ru.", "bytearray(2130706432)"),
    # a torch.nn class CALLED with the file's arguments (torch.save rebuilds modules with NEWOBJ, never this)
    (b"\x80\x02ctorch.nn.modules.linear\nLinear\nM\x20\x4eM\x20\x4e\x86R.", "torch.nn.modules.linear.Linear(...)"),
    (b"(M\x20\x4eM\x20\x4eitorch.nn.modules.linear\nLinear\n.", "INST calls torch.nn.modules.linear.Linear"),
])
def test_allowed_callables_called_to_allocate_are_refused(tmp_path, payload, words):
    p = _call_gadget(payload, tmp_path / "gadget.pt")
    with pytest.raises(LoadError, match="torch.save never writes"):
        load(str(p))
    (res,) = run_cli(["inspect", str(p), "-q"])
    assert res["code"] == 2 and words in res["out"] and "Traceback" not in res["out"], res
    assert_bounded(res)


def test_what_torch_save_writes_with_the_same_callables_still_loads(tmp_path):
    """Modules pickled by torch.save (NEWOBJ + BUILD) and bytearrays saved from their bytes are not refused."""
    torch.save({"b": bytearray(b"xyz"), "w": torch.zeros(3)}, tmp_path / "ckpt.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 3)), tmp_path / "zip.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 3)), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert load(str(tmp_path / "ckpt.pt")).tensors
    assert load(str(tmp_path / "zip.pt")).module is not None
    assert load(str(tmp_path / "legacy.pt")).module is not None
