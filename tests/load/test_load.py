"""Loaders: every format round-trips, detection reads bytes, nothing unsafe runs."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import textwrap
import uuid
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn as nn

from dldoctor.errors import DLDoctorError, LoadError, UnsafeModelError
from dldoctor.load import PickleScanError, detect_format, load, parse_spec, pickle_globals
from dldoctor.load.base import LoadOptions
from dldoctor.load.onnx_file import save_with_data

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# helpers


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()


X = torch.randn(1, 3, 8, 8)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def write_module(dirpath: Path, source: str, prefix: str = "usermods") -> str:
    """A uniquely named module file in dirpath; returns its module name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (dirpath / f"{name}.py").write_text(textwrap.dedent(source))
    return name


CUSTOM_SRC = """
    import torch.nn as nn

    class Custom(nn.Module):
        def __init__(self, n=4):
            super().__init__()
            self.fc = nn.Linear(n, 2)

        def forward(self, x):
            return self.fc(x) * 2

    def build(n=4, bias=True):
        m = nn.Sequential(nn.Linear(n, 3, bias=bias), nn.ReLU(), nn.Linear(3, 2))
        return m

    def needs_values():
        t = nn.Linear(2, 2)
        if t.weight.sum().item() > 1e9:
            pass
        return t

    def boom():
        raise RuntimeError("factory failed on purpose")

    def not_a_module():
        return 42
"""


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    """(module name, imported module) of a fresh user module on sys.path."""
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, CUSTOM_SRC)
    importlib.invalidate_caches()
    mod = importlib.import_module(name)
    yield name, mod
    sys.modules.pop(name, None)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    codes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.uint8: "U8"}
    header: dict = {}
    blobs = []
    off = 0
    for k, t in tensors.items():
        b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Evil:
    """Pickles as a call to os.system (the canary test)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class EvilEval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


class EvilTorchSave:
    """A global under torch. that writes files: must not be allowed just for being torch's."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (torch.save, ({"x": 1}, self.target))


class EvilFx:
    """torch.fx's reduce_graph_module exec()s source from the pickle: torch's own, and unsafe."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        from torch.fx.graph_module import reduce_graph_module

        return (reduce_graph_module, ({"_code": "def forward(self):\n    return None\n"}, self.code))


# ---------------------------------------------------------------------------
# the package itself


def test_import_does_not_import_torch_or_onnx():
    code = "import sys, dldoctor.load; assert 'torch' not in sys.modules and 'onnx' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_parse_spec_literals_only():
    assert parse_spec("torchvision.models:resnet50") == ("torchvision.models", "resnet50", (), {})
    assert parse_spec("a.b:f(1, 'x', k=(2, 3), d={'a': None})") == ("a.b", "f", (1, "x"), {"k": (2, 3), "d": {"a": None}})
    for bad in ("a:f(__import__('os').system('x'))", "a:f(*xs)", "a:f(**kw)", "a:f(x)", "a:f(1)+g(2)"):
        with pytest.raises(LoadError):
            parse_spec(bad)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_globals_all_protocols(protocol):
    data = pickle.dumps({"a": OrderedDict(x=1), "f": os.path.join}, protocol=protocol)
    found = pickle_globals(data)
    assert "collections.OrderedDict" in found
    assert f"{os.path.join.__module__}.join" in found


def test_pickle_globals_dynamic_stack_global():
    data = bytes([0x80, 4]) + b"K\x01K\x02" + bytes([0x93]) + b"."  # STACK_GLOBAL on two ints
    assert pickle_globals(data) == ["<dynamic STACK_GLOBAL>"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_pickle_scan_fuzz_only_raises_scan_errors(data):
    try:
        pickle_globals(b"\x80\x02" + data)
    except PickleScanError:
        pass


def test_pickle_globals_does_not_run_anything(tmp_path):
    canary = tmp_path / "canary"
    data = pickle.dumps(Evil(f"touch {canary}"), protocol=4)
    assert pickle_globals(data) == [f"{os.system.__module__}.system"]
    assert not canary.exists()


# ---------------------------------------------------------------------------
# torch.save: full modules


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_full_module_of_torch_nn_classes_loads_without_trust(tmp_path, zipped):
    m = small()
    p = tmp_path / "net.pt"
    torch.save(m, p, _use_new_zipfile_serialization=zipped)
    before = sha(p)
    r = load(str(p))
    assert r.format == "torch-module"
    assert r.name == "net" and r.sha256 == before == sha(p)
    assert not any("trust" in n for n in r.notes)
    assert same_weights(m, r.module)
    assert torch.equal(m(X), r.module(X))


def test_transformer_layer_with_activation_function_loads(tmp_path):
    m = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), nn.LSTM(8, 4)).eval()
    p = tmp_path / "tr.pt"
    torch.save(m, p)
    r = load(str(p))
    assert r.format == "torch-module" and same_weights(m, r.module)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_custom_class_refused_then_allowed(tmp_path, usermod, zipped):
    name, mod = usermod
    m = mod.Custom()
    p = tmp_path / "custom.pt"
    torch.save(m, p, _use_new_zipfile_serialization=zipped)
    with pytest.raises(UnsafeModelError) as ei:
        load(str(p))
    err = ei.value
    assert f"{name}.Custom" in err.message and f"{name}.Custom" in err.globals_wanted
    assert "torch.nn.modules.linear.Linear" not in err.globals_wanted
    assert "--allow-class" in err.hint and "--code" in err.hint and "--trust" in err.hint

    for opts in (
        LoadOptions(allow_classes=(f"{name}.Custom",)),
        LoadOptions(code=(name,)),
        LoadOptions(code=(str(tmp_path / f"{name}.py"),)),
    ):
        r = load(str(p), opts)
        assert r.format == "torch-module" and type(r.module).__name__ == "Custom"
        assert same_weights(m, r.module)
        assert not any("trust" in n for n in r.notes)


def test_class_from_a_script_run_as_main_loads_with_code_path(tmp_path, monkeypatch):
    src = tmp_path / "train_script.py"
    src.write_text(textwrap.dedent(CUSTOM_SRC))
    ns: dict = {"__name__": "__main__"}
    exec(compile(src.read_text(), str(src), "exec"), ns)  # the test plays the training script
    Custom = ns["Custom"]
    monkeypatch.setattr(sys.modules["__main__"], "Custom", Custom, raising=False)
    m = Custom()
    p = tmp_path / "from_main.pt"
    torch.save(m, p)
    with pytest.raises(UnsafeModelError, match=r"__main__\.Custom"):
        load(str(p))
    with pytest.raises(LoadError, match="--code|__main__"):
        load(str(p), LoadOptions(allow_classes=("__main__.NoSuchClass",)))
    r = load(str(p), LoadOptions(code=(str(src),)))
    assert type(r.module).__name__ == "Custom" and same_weights(m, r.module)
    sys.modules.pop("train_script", None)


def test_trust_loads_unsafely_with_a_note(tmp_path, usermod):
    name, mod = usermod
    p = tmp_path / "custom.pt"
    torch.save(mod.Custom(), p)
    r = load(str(p), LoadOptions(trust=True))
    assert r.format == "torch-module"
    assert any("trust" in n and "weights_only=False" in n for n in r.notes)


def test_allow_class_that_cannot_be_found(tmp_path):
    p = tmp_path / "m.pt"
    torch.save(small(), p)
    with pytest.raises(LoadError, match="no_such_pkg_xyz"):
        load(str(p), LoadOptions(allow_classes=("no_such_pkg_xyz.Cls",)))
    with pytest.raises(LoadError, match="no such file"):
        load(str(p), LoadOptions(code=(str(tmp_path / "missing.py"),)))


# ---------------------------------------------------------------------------
# malicious pickles: refused, nothing runs


def _malicious_files(tmp_path: Path, canary: Path) -> dict[str, Path]:
    cmd = f"touch {canary}"
    code = f"open({str(canary)!r}, 'w').close()"
    files = {}
    p = tmp_path / "sys_zip.pt"
    torch.save(Evil(cmd), p)
    files["os.system in zip data.pkl"] = p
    p = tmp_path / "sys_legacy.pth"
    torch.save({"model": Evil(cmd)}, p, _use_new_zipfile_serialization=False)
    files["os.system legacy"] = p
    p = tmp_path / "eval_zip.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": EvilEval(code)}, p)
    files["eval in zip"] = p
    p = tmp_path / "torchsave.pt"
    torch.save(EvilTorchSave(str(canary)), p)
    files["torch.save global"] = p
    p = tmp_path / "fx.pt"
    torch.save({"model": EvilFx(code)}, p)
    files["torch.fx reduce_graph_module"] = p
    # a hand-made torch zip whose data.pkl uses protocol 4 (STACK_GLOBAL)
    p = tmp_path / "proto4.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(cmd), protocol=4))
        z.writestr("archive/version", "3\n")
    files["protocol 4 data.pkl"] = p
    # plain pickles, named to fool extension-based detection
    p = tmp_path / "plain.onnx"
    p.write_bytes(pickle.dumps(Evil(cmd), protocol=2))
    files["plain pickle"] = p
    p = tmp_path / "proto0.pt"
    p.write_bytes(f"cos\nsystem\n(S'{cmd}'\ntR.".encode())
    files["protocol 0 pickle"] = p
    p = tmp_path / "eval5.bin"
    p.write_bytes(pickle.dumps(EvilEval(code), protocol=5))
    files["eval protocol 5"] = p
    return files


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path):
    canary = tmp_path / "canary"
    files = _malicious_files(tmp_path, canary)
    for label, p in files.items():
        before = sha(p)
        with pytest.raises(UnsafeModelError) as ei:
            load(str(p))
        assert "refused" in ei.value.message, label
        wanted = " ".join(ei.value.globals_wanted) + ei.value.message
        assert any(w in wanted for w in ("system", "eval", "torch.serialization.save", "reduce_graph_module")), (label, wanted)
        # allowing unrelated classes does not open the door
        with pytest.raises(UnsafeModelError):
            load(str(p), LoadOptions(allow_classes=("collections.Counter",)))
        assert sha(p) == before
    assert not canary.exists()


# ---------------------------------------------------------------------------
# state dicts and checkpoints


def test_state_dict_without_arch_lists_tensors(tmp_path):
    m = small()
    p = tmp_path / "w.pth"
    torch.save(m.state_dict(), p)
    r = load(str(p))
    assert r.format == "state-dict" and r.module is None
    names = [t.name for t in r.tensors]
    assert names == list(m.state_dict())
    t0 = r.tensors[0]
    assert t0.shape == [4, 3, 3, 3] and t0.dtype == "float32" and t0.nbytes == 4 * 3 * 3 * 3 * 4
    assert any("--arch" in n for n in r.notes)


def test_state_dict_with_arch(tmp_path, usermod, monkeypatch):
    name, mod = usermod
    m = mod.build(5)
    p = tmp_path / "w.pt"
    torch.save(m.state_dict(), p)
    r = load(str(p), LoadOptions(arch=f"{name}:build(5)"))
    assert r.format == "state-dict" and same_weights(m, r.module)
    # DataParallel-style prefix is stripped
    torch.save({f"module.{k}": v for k, v in m.state_dict().items()}, p)
    r = load(str(p), LoadOptions(arch=f"{name}:build(n=5)"))
    assert same_weights(m, r.module) and any("module." in n for n in r.notes)


def test_wrong_arch_is_a_load_error(tmp_path, usermod):
    name, mod = usermod
    p = tmp_path / "w.pt"
    torch.save(mod.build(5).state_dict(), p)
    with pytest.raises(LoadError) as ei:
        load(str(p), LoadOptions(arch=f"{name}:build(4)"))
    assert "0.weight" in ei.value.message and "--arch" in ei.value.hint
    with pytest.raises(LoadError, match="missing keys|unexpected keys"):
        load(str(p), LoadOptions(arch=f"{name}:build(5, bias=False)"))
    with pytest.raises(LoadError, match="cannot import"):
        load(str(p), LoadOptions(arch="no_such_module_q:build"))


def test_checkpoint_with_optimizer(tmp_path, usermod):
    name, mod = usermod
    m = mod.build(4)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    p = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, "model_state_dict": m.state_dict(), "optimizer_state_dict": opt.state_dict(), "best": 0.5}, p)
    r = load(str(p))
    assert r.format == "checkpoint"
    assert [t.name for t in r.tensors] == list(m.state_dict())
    assert any("model_state_dict" in n for n in r.notes) and any("--arch" in n for n in r.notes)
    r = load(str(p), LoadOptions(arch=f"{name}:build"))
    assert r.format == "checkpoint" and same_weights(m, r.module)


def test_checkpoint_holding_a_module(tmp_path):
    m = small()
    p = tmp_path / "ck.pt"
    torch.save({"model": m, "epoch": 1}, p)
    r = load(str(p))
    assert r.format == "checkpoint" and same_weights(m, r.module)


def test_checkpoint_without_known_key_and_non_models(tmp_path):
    p = tmp_path / "odd.pt"
    torch.save({"encoder": {"w": torch.ones(2, 2)}, "step": 3}, p)
    r = load(str(p))
    assert r.format == "checkpoint" and [t.name for t in r.tensors] == ["encoder.w"]
    torch.save([1, 2, 3], p)
    with pytest.raises(LoadError, match="list"):
        load(str(p))
    torch.save({"epoch": 3}, p)
    with pytest.raises(LoadError, match="without tensors"):
        load(str(p))


# ---------------------------------------------------------------------------
# factory specs


def test_factory_specs(tmp_path, monkeypatch):
    r = load("torch.nn:Linear(3, 4, bias=False)")
    assert r.format == "factory" and r.name == "Linear" and r.sha256 is None
    assert r.module.weight.shape == (4, 3) and r.module.bias is None
    # modules in the current directory import like `python -m`
    monkeypatch.chdir(tmp_path)
    name = write_module(tmp_path, CUSTOM_SRC, prefix="zoo")
    try:
        r = load(f"{name}:build(n=6)")
        assert r.format == "factory" and r.module[0].in_features == 6
        r = load(f"{name}:Custom")
        assert type(r.module).__name__ == "Custom"
        for spec, pattern in (
            (f"{name}:boom", "factory failed on purpose"),
            (f"{name}:not_a_module", "not a torch.nn.Module"),
            (f"{name}:nope", "no attribute"),
            ("no_such_module_zz:build", "cannot import"),
            (f"{name}:build(n=open('x'))", "literals"),
        ):
            with pytest.raises(LoadError, match=pattern):
                load(spec)
        with pytest.raises(LoadError, match="meta"):
            load(f"{name}:needs_values", LoadOptions(device="meta"))
    finally:
        sys.modules.pop(name, None)


def test_factory_on_meta_costs_no_memory():
    r = load("torch.nn:Linear(100000, 100000)", LoadOptions(device="meta"))  # 40 GB if real
    assert r.module.weight.is_meta and r.module.weight.shape == (100000, 100000)


def test_torchvision_factory():
    pytest.importorskip("torchvision")
    r = load("torchvision.models:resnet18(num_classes=10)", LoadOptions(device="meta"))
    assert r.format == "factory" and r.module.fc.out_features == 10 and r.module.fc.weight.is_meta


def test_existing_path_wins_over_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("torch.nn:Linear").write_text("not a model")
    with pytest.raises(LoadError, match="not a model file"):
        load("torch.nn:Linear")


# ---------------------------------------------------------------------------
# ONNX


def export_onnx(path: Path, model: nn.Module | None = None) -> nn.Module:
    model = model or small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X,), str(path), dynamo=False)
    return model


def test_onnx_roundtrip_and_extension_ignored(tmp_path):
    import onnx

    p = tmp_path / "looks_like_torch.pt"
    export_onnx(p)
    before = sha(p)
    assert detect_format(str(p)) == "onnx"
    r = load(str(p))
    assert r.format == "onnx" and isinstance(r.onnx_model, onnx.ModelProto)
    assert {i.name for i in r.onnx_model.graph.initializer} >= {"5.weight", "5.bias"}
    assert r.sha256 == before == sha(p) and r.name == "looks_like_torch"


def _external(tmp_path: Path) -> tuple[Path, object]:
    import onnx

    folder = tmp_path / "model"
    folder.mkdir()
    export_onnx(tmp_path / "plain.onnx")
    m = onnx.load(str(tmp_path / "plain.onnx"))
    onnx.save_model(m, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)  # fmt: skip
    return folder, onnx.load(str(folder / "m.onnx"), load_external_data=False)


def _relocate(model, loc: str):
    m = type(model)()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = loc
    return m


def test_onnx_external_data_inside_folder_loads(tmp_path):
    import onnx

    folder, _ = _external(tmp_path)
    r = load(str(folder / "m.onnx"))
    assert r.format == "onnx" and any("external data" in n and "not read" in n for n in r.notes)
    # validated, not read: the shapes are all inspect needs
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in r.onnx_model.graph.initializer)
    # what needs the values gets them through save_with_data: same outputs as the model without external data
    save_with_data(r, str(tmp_path / "copy.onnx"))
    copy = onnx.load(str(tmp_path / "copy.onnx"))
    plain = onnx.load(str(tmp_path / "plain.onnx"))
    assert {t.name: t.raw_data for t in copy.graph.initializer} == {t.name: t.raw_data for t in plain.graph.initializer}
    # a subfolder, and a symlink that stays inside, are fine
    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_bytes((folder / "weights.bin").read_bytes())
    os.symlink(folder / "weights.bin", folder / "inside_link.bin")
    m = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for loc in ("sub/w.bin", "inside_link.bin"):
        (folder / "x.onnx").write_bytes(_relocate(m, loc).SerializeToString())
        assert load(str(folder / "x.onnx")).format == "onnx"


def test_onnx_external_data_escapes_are_refused(tmp_path):
    folder, m = _external(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((folder / "weights.bin").read_bytes())
    os.symlink(outside, folder / "escape_link.bin")
    os.link(outside, folder / "hard_link.bin")
    for loc in ("../outside.bin", str(outside), "escape_link.bin", "sub/../../outside.bin", "hard_link.bin"):
        p = folder / "evil.onnx"
        p.write_bytes(_relocate(m, loc).SerializeToString())
        with pytest.raises(UnsafeModelError, match="outside|absolute"):
            load(str(p))
    (folder / "evil.onnx").write_bytes(_relocate(m, "missing.bin").SerializeToString())
    with pytest.raises(LoadError, match="missing"):
        load(str(folder / "evil.onnx"))


def test_corrupt_onnx(tmp_path):
    p = tmp_path / "m.onnx"
    export_onnx(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError):
        load(str(p))


# ---------------------------------------------------------------------------
# TorchScript and torch.export: listed without trust, loaded with it


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    d = tmp_path_factory.mktemp("archives")
    m = small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(m, X).save(str(d / "traced.pt"))
        ep = torch.export.export(m, (X,))
        torch.export.save(ep, str(d / "exported.pt2"))
    return m, d


@pytest.mark.parametrize("fname,fmt", [("traced.pt", "torchscript"), ("exported.pt2", "torch-export")])
def test_code_archives_need_trust(archives, fname, fmt):
    m, d = archives
    p = d / fname
    before = sha(p)
    assert detect_format(str(p)) == fmt
    r = load(str(p))
    assert r.format == fmt and r.module is None
    assert any("--trust" in n for n in r.notes)
    assert r.archive and all({"name", "size"} <= set(e) for e in r.archive)
    listed = {t.name: t for t in r.tensors}
    assert listed["0.weight"].shape == [4, 3, 3, 3] and listed["0.weight"].dtype == "float32"
    assert listed["5.weight"].nbytes == 2 * 4 * 4
    r = load(str(p), LoadOptions(trust=True))
    assert r.format == fmt and r.module is not None
    assert any("trust" in n for n in r.notes)
    assert torch.allclose(r.module(X), m(X), atol=1e-6)
    assert sha(p) == before


# ---------------------------------------------------------------------------
# safetensors


def test_safetensors_header_and_arch(tmp_path, usermod):
    name, mod = usermod
    m = mod.build(4)
    sd = m.state_dict()
    p = tmp_path / "weights.bin"  # not named .safetensors: bytes decide
    write_safetensors(p, sd, metadata={"format": "pt"})
    assert detect_format(str(p)) == "safetensors"
    r = load(str(p))
    assert r.format == "safetensors" and r.module is None
    assert [(t.name, t.shape, t.dtype, t.nbytes) for t in r.tensors] == [
        (k, list(v.shape), "float32", v.numel() * 4) for k, v in sd.items()
    ]
    r = load(str(p), LoadOptions(arch=f"{name}:build(4)"))
    assert r.format == "safetensors" and same_weights(m, r.module)
    with pytest.raises(LoadError, match="--arch|do not fit"):
        load(str(p), LoadOptions(arch=f"{name}:build(3)"))


def test_safetensors_dtypes_and_empty_tensor(tmp_path):
    p = tmp_path / "x.safetensors"
    write_safetensors(p, {"a": torch.ones(2, 3, dtype=torch.bfloat16), "b": torch.zeros(0, 4), "c": torch.arange(3)})
    r = load(str(p))
    assert [(t.dtype, t.nbytes) for t in r.tensors] == [("bfloat16", 12), ("float32", 0), ("int64", 24)]


def test_safetensors_bad_offsets(tmp_path):
    p = tmp_path / "bad.safetensors"
    h = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\x00" * 8)  # 8 bytes of data, header says 16
    with pytest.raises(LoadError, match="outside"):
        load(str(p))
    h = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\x00" * 16)
    with pytest.raises(LoadError, match="needs 12"):
        load(str(p))


# ---------------------------------------------------------------------------
# detection and junk


def test_detection_ignores_extension(tmp_path):
    m = small()
    cases = {}
    p = tmp_path / "really_a_pickle.onnx"
    torch.save(m, p)
    cases[p] = "torch-pickle"
    p = tmp_path / "legacy.safetensors"  # torch.load would hand this name to the safetensors reader
    torch.save(m.state_dict(), p, _use_new_zipfile_serialization=False)
    cases[p] = "torch-pickle"
    p = tmp_path / "onnx.pth"
    export_onnx(p, m)
    cases[p] = "onnx"
    p = tmp_path / "plain.pt"
    p.write_bytes(pickle.dumps({"a": 1}))
    cases[p] = "pickle"
    for stem_ in ("code", "models", "constants", "archive_format"):  # torch.save uses the stem as zip prefix
        p = tmp_path / f"{stem_}.pt"
        torch.save(m.state_dict(), p)
        cases[p] = "torch-pickle"
    for path, kind in cases.items():
        assert detect_format(str(path)) == kind, path
    r = load(str(tmp_path / "legacy.safetensors"))
    assert r.format == "state-dict"
    r = load(str(tmp_path / "really_a_pickle.onnx"))
    assert r.format == "torch-module"
    with pytest.raises(LoadError, match="torch.save did not write"):
        load(str(tmp_path / "plain.pt"))


def _junk(tmp_path: Path) -> dict[str, Path]:
    rnd = random.Random(0)
    out = {}

    def put(name: str, data: bytes) -> None:
        p = tmp_path / name
        p.write_bytes(data)
        out[name] = p

    put("empty.pt", b"")
    put("random.pt", bytes(rnd.getrandbits(8) for _ in range(4096)))
    put("text.onnx", b"hello, this is not a model\n" * 10)
    put("zip_without_data.pt", _zip_bytes({"a.txt": b"hi"}))
    buf = io.BytesIO()
    torch.save(small(), buf)
    full = buf.getvalue()
    put("truncated_zip.pt", full[: len(full) // 2])
    put("truncated_zip_tail.pt", full[:-30])
    buf = io.BytesIO()
    torch.save(small().state_dict(), buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue()
    put("truncated_legacy.pt", legacy[:300])
    put("truncated_legacy_data.pt", legacy[:-100])
    put("safetensors_garbage.bin", struct.pack("<Q", 20) + b"{not json at all!!!}")
    return out


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def test_junk_files_are_load_errors(tmp_path):
    for label, p in _junk(tmp_path).items():
        before = sha(p)
        with pytest.raises(LoadError) as ei:
            load(str(p))
        assert not isinstance(ei.value, UnsafeModelError), label
        assert str(p) in ei.value.message and ei.value.hint, label
        assert "\n" not in ei.value.message, label
        assert sha(p) == before
    with pytest.raises(LoadError, match="no such file"):
        load(str(tmp_path / "missing.pt"))
    with pytest.raises(LoadError, match="directory"):
        load(str(tmp_path))
    with pytest.raises(LoadError, match="not a model file"):
        load(str(tmp_path / "empty.pt"))
    assert detect_format(str(tmp_path / "random.pt")) == "unknown"


def test_mutated_torch_zip_never_leaks_a_traceback(tmp_path):
    buf = io.BytesIO()
    torch.save(small(), buf)
    full = bytearray(buf.getvalue())
    rnd = random.Random(1)
    p = tmp_path / "mut.pt"
    for _ in range(40):
        data = bytearray(full)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        p.write_bytes(bytes(data))
        try:
            load(str(p))
        except DLDoctorError:
            pass


@pytest.mark.gpu
def test_cuda_map_location(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    p = tmp_path / "w.pt"
    torch.save(small().state_dict(), p)
    r = load(str(p), LoadOptions(device="cuda"))
    assert r.format == "state-dict"
    p2 = tmp_path / "m.pt"
    torch.save(small(), p2)
    r = load(str(p2), LoadOptions(device="cuda"))
    assert next(r.module.parameters()).is_cuda


def test_files_over_the_hash_limit_get_no_sha256_and_a_note(tmp_path):
    from dldoctor.load.base import HASH_LIMIT

    p = tmp_path / "m.pt"
    torch.save(small().state_dict(), p)
    assert load(str(p)).sha256 == sha(p) and HASH_LIMIT == 4 * 2**30  # under the default limit: hashed
    r = load(str(p), LoadOptions(hash_limit=100))
    assert r.sha256 is None and any("sha256 not computed" in n and "--hash" in n for n in r.notes)
    assert load(str(p), LoadOptions(hash_limit=None)).sha256 == sha(p)


def test_cli_hash_flag_computes_it_however_large(tmp_path, monkeypatch):
    import json as _json

    from typer.testing import CliRunner

    import dldoctor.load.base as base
    from dldoctor.cli import app

    p = tmp_path / "m.pt"
    torch.save(small().state_dict(), p)
    monkeypatch.setattr(base, "HASH_LIMIT", 100)  # the CLI reads the limit when it runs
    for extra, want in (([], None), (["--hash"], sha(p))):
        r = CliRunner().invoke(app, ["inspect", str(p), "-f", "json", "-q", *extra])
        assert r.exit_code == 0, r.output
        assert _json.loads(r.stdout)["model"]["sha256"] == want


def test_code_file_named_like_an_installed_package_never_takes_its_name(tmp_path):
    """--code ./captum.py: the file is imported under a name of its own; a later `import captum` (the probe's
    attributions) still gets the installed package, even when nothing had imported it before."""
    import subprocess
    import sys

    (tmp_path / "captum.py").write_text("class Net:\n    pass\n")
    code = ("import sys; from dldoctor.load.torch_pickle import _import_code; "
            f"m = _import_code({str(tmp_path / 'captum.py')!r}); import captum; "
            "print(m.__name__ != 'captum', hasattr(captum, 'attr'), hasattr(m, 'Net'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "True", "True"], r.stdout + r.stderr
