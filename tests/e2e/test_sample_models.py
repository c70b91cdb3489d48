"""The sample models: factories, the build script's files, determinism."""

from __future__ import annotations

import json
import pickletools
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sample_models import zoo  # noqa: E402
from sample_models.build import build  # noqa: E402

NAMES = list(zoo.FACTORIES)
PER_MODEL = ["{n}.pt", "{n}_state.pt", "{n}_ckpt.pt", "{n}.onnx", "{n}.safetensors"]
EXTRAS = ["plain_cnn.torchscript.pt", "external/plain_cnn.onnx", "external/weights.bin"]
# Every model is written five times over (full module, state_dict, checkpoint, ONNX,
# safetensors); the largest, tiny_transformer, is about 0.42 MB a copy, and the whole
# set about 6.5 MB.
MAX_TOTAL_BYTES = 8 * 2**20
EXPECTED_OUT = {
    "plain_cnn": (1, 10),
    "resnet_small": (1, 10),
    "inception_block_net": (1, 10),
    "mlp": (1, 10),
    "tiny_transformer": (1, 32, 256),
    "lstm_classifier": (1, 5),
}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    build(out, verbose=False)
    return out


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_registry_is_consistent():
    assert set(zoo.FACTORIES) == set(zoo.EXAMPLE_INPUTS) == set(EXPECTED_OUT)
    for name, (shape, dtype) in zoo.EXAMPLE_INPUTS.items():
        assert isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)
        assert dtype in ("float32", "int64"), name


@pytest.mark.parametrize("name", NAMES)
def test_forward_on_example_input(name):
    model = zoo.FACTORIES[name]()
    shape, dtype = zoo.EXAMPLE_INPUTS[name]
    x = zoo.example_input(name)
    assert tuple(x.shape) == shape and x.dtype == getattr(torch, dtype)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == EXPECTED_OUT[name]
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_factories_are_deterministic_and_leave_global_rng_alone(name):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = zoo.FACTORIES[name]().state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    b = zoo.FACTORIES[name]().state_dict()
    c = zoo.FACTORIES[name](seed=1).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_all_files_exist_and_are_small(out_dir):
    expected = [p.format(n=n) for n in NAMES for p in PER_MODEL] + EXTRAS
    for rel in expected:
        assert (out_dir / rel).is_file(), rel
        assert (out_dir / rel).stat().st_size > 0, rel
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES


def test_pt2_written_or_skipped(out_dir):
    if not (out_dir / "plain_cnn.pt2").is_file():
        pytest.skip(f"torch.export failed on torch {torch.__version__}; build skips it")
    program = torch.export.load(str(out_dir / "plain_cnn.pt2"))
    x = zoo.example_input("plain_cnn")
    torch.testing.assert_close(program.module()(x), zoo.plain_cnn()(x))


def test_two_builds_give_identical_state_dicts(out_dir, tmp_path):
    build(tmp_path, verbose=False)
    for name in NAMES:
        a, b = _load(out_dir / f"{name}_state.pt"), _load(tmp_path / f"{name}_state.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
        # Our safetensors writer is byte-for-byte deterministic.
        sa = (out_dir / f"{name}.safetensors").read_bytes()
        assert sa == (tmp_path / f"{name}.safetensors").read_bytes(), name


@pytest.mark.parametrize("name", NAMES)
def test_saved_weights_match_factory(out_dir, name):
    ref = zoo.FACTORIES[name]().state_dict()
    state = _load(out_dir / f"{name}_state.pt")
    ckpt = _load(out_dir / f"{name}_ckpt.pt")
    assert ckpt["epoch"] == 3
    assert set(ckpt["optimizer_state_dict"]) == {"state", "param_groups"}
    for sd in (state, ckpt["model_state_dict"]):
        assert sd.keys() == ref.keys()
        assert all(torch.equal(sd[k], ref[k]) for k in ref)


@pytest.mark.parametrize("name", NAMES)
def test_full_module_pickle_round_trips(out_dir, name):
    model = torch.load(out_dir / f"{name}.pt", map_location="cpu", weights_only=False)
    x = zoo.example_input(name)
    with torch.no_grad():
        torch.testing.assert_close(model(x), zoo.FACTORIES[name]()(x))


def _pickle_globals(path: Path) -> set:
    with zipfile.ZipFile(path) as zf:
        member = next(m for m in zf.namelist() if m.endswith("/data.pkl"))
        data = zf.read(member)
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.parametrize("name", NAMES)
def test_pickles_name_custom_classes_only_where_needed(out_dir, name):
    modules = {g.split(" ")[0] for g in _pickle_globals(out_dir / f"{name}.pt")}
    custom = {m for m in modules
              if m.split(".")[0] not in ("torch", "collections", "__builtin__", "builtins")}
    if name in ("plain_cnn", "mlp"):
        assert custom == set()
    else:
        assert custom == {"sample_models.zoo"}


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_layout(out_dir, name):
    raw = (out_dir / f"{name}.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    state = zoo.FACTORIES[name]().state_dict()
    assert list(header) == list(state)
    end = 0
    for key, info in header.items():
        t = state[key]
        begin, stop = info["data_offsets"]
        assert begin == end and info["shape"] == list(t.shape)
        assert info["dtype"] == {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        got = torch.frombuffer(bytearray(raw[8 + n + begin:8 + n + stop]), dtype=t.dtype)
        assert torch.equal(got.reshape(t.shape), t), key
        end = stop
    assert 8 + n + end == len(raw)


def test_onnx_files_run_and_match_torch(out_dir):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    paths = {name: out_dir / f"{name}.onnx" for name in NAMES}
    paths["plain_cnn_external"] = out_dir / "external" / "plain_cnn.onnx"
    for key, path in paths.items():
        name = "plain_cnn" if key == "plain_cnn_external" else key
        model = onnx.load(str(path))
        assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in model.opset_import)
        batch = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch.dim_param == "batch", key
        x = zoo.example_input(name)
        x2 = torch.cat([x, x])  # the batch axis is dynamic
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x2.numpy()})
        with torch.no_grad():
            ref = zoo.FACTORIES[name]()(x2)
        torch.testing.assert_close(torch.from_numpy(y), ref, rtol=1e-4, atol=1e-4)


def test_external_data_lives_in_weights_bin(out_dir):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(out_dir / "external" / "plain_cnn.onnx"), load_external_data=False)
    locations = set()
    for init in model.graph.initializer:
        assert init.data_location == onnx.TensorProto.EXTERNAL, init.name
        locations |= {e.value for e in init.external_data if e.key == "location"}
    assert locations == {"weights.bin"}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_loads(out_dir):
    scripted = torch.jit.load(str(out_dir / "plain_cnn.torchscript.pt"), map_location="cpu")
    x = zoo.example_input("plain_cnn")
    torch.testing.assert_close(scripted(x), zoo.plain_cnn()(x))
