"""Hugging Face model folders (load/hf_folder.py): save_pretrained folders of tiny configs, built offline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dldoctor.api.inspect import inspect  # noqa: E402
from dldoctor.api.batch import expand  # noqa: E402
from dldoctor.errors import LoadError  # noqa: E402
from dldoctor.load import load  # noqa: E402
from dldoctor.load.base import LoadOptions  # noqa: E402
from dldoctor.load.hf_folder import is_hf_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
T = 16


def _save(model: torch.nn.Module, path: Path, **kw) -> Path:
    model.save_pretrained(str(path), **kw)
    return path


def gpt2(path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    return m, _save(m, path)


def llama(path: Path, **kw) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=200, max_position_embeddings=128,
                                   tie_word_embeddings=False)
    m = transformers.LlamaForCausalLM(cfg).eval()
    return m, _save(m, path, **kw)


def bert(path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=120, max_position_embeddings=64)
    m = transformers.BertModel(cfg).eval()
    return m, _save(m, path)


def params_once(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())  # parameters() yields a tied tensor once


def meta_macs(m: torch.nn.Module, t: int = T) -> int:
    """FlopCounterMode's MACs of the same model rebuilt on meta at 1 x t input_ids."""
    with torch.device("meta"):
        mm = type(m)(m.config).eval()
    ids = torch.zeros(1, t, dtype=torch.int64, device="meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        mm(input_ids=ids)
    return fc.get_total_flops() // 2


def _check_exact(m: torch.nn.Module, folder: Path) -> None:
    r = inspect(str(folder), input_shapes=[[1, T]], dtype="int64")
    assert r.model.format == "hf-folder"
    assert r.params.total == params_once(m)
    assert r.flops.status == "complete", (r.flops.uncounted_ops, r.flops.reason)
    assert r.flops.macs == meta_macs(m)
    assert not [d.message for d in r.diagnostics if "counted on cpu" in d.message]  # counted on meta


def test_single_file_bert(tmp_path: Path) -> None:
    m, folder = bert(tmp_path / "bert")
    assert (folder / "model.safetensors").exists()
    _check_exact(m, folder)
    loaded = load(str(folder), LoadOptions())
    sd = m.state_dict()
    for k, v in loaded.module.state_dict().items():
        assert torch.equal(v, sd[k]), k  # real values, loaded with assign=True


def test_tied_gpt2(tmp_path: Path) -> None:
    m, folder = gpt2(tmp_path / "gpt2")
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())  # save_pretrained writes the tied weight once
    _check_exact(m, folder)
    loaded = load(str(folder), LoadOptions())
    assert loaded.module.lm_head.weight is loaded.module.transformer.wte.weight
    assert torch.equal(loaded.module.lm_head.weight, m.lm_head.weight)
    assert any("tied" in n for n in loaded.notes)
    ids = torch.randint(0, 100, (1, T))
    with torch.no_grad():
        assert torch.allclose(loaded.module(input_ids=ids).logits, m(input_ids=ids).logits)


def test_sharded_llama(tmp_path: Path) -> None:
    m, folder = llama(tmp_path / "llama", max_shard_size="50KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").exists()
    _check_exact(m, folder)
    # one model for the folder scan, not its shards
    assert expand([str(folder)]) == [str(folder)]
    assert expand([str(tmp_path)]) == [str(folder)]
    loaded = load(str(folder), LoadOptions())
    ids = torch.randint(0, 200, (1, T))
    with torch.no_grad():
        assert torch.allclose(loaded.module(input_ids=ids).logits, m(input_ids=ids).logits, atol=1e-5)


def test_meta_device_reads_headers_only(tmp_path: Path) -> None:
    m, _ = llama(tmp_path / "llama")
    folder = _save(m.to(torch.bfloat16), tmp_path / "llama-bf16")
    loaded = load(str(folder), LoadOptions(device="meta"))
    assert all(p.is_meta for p in loaded.module.parameters())
    assert params_once(loaded.module) == params_once(m)
    assert {p.dtype for p in loaded.module.parameters()} == {torch.bfloat16}  # the files' dtype, not float32


def test_weights_that_do_not_fit_config(tmp_path: Path) -> None:
    _, folder = gpt2(tmp_path / "gpt2")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_embd"] = 64
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="do not fit the architecture"):
        load(str(folder), LoadOptions(device="meta"))


def test_pytorch_model_bin(tmp_path: Path) -> None:
    m, folder = gpt2(tmp_path / "gpt2")
    os.remove(folder / "model.safetensors")
    torch.save(m.state_dict(), folder / "pytorch_model.bin")
    loaded = load(str(folder), LoadOptions())
    assert torch.equal(loaded.module.transformer.wte.weight, m.transformer.wte.weight)
    assert params_once(loaded.module) == params_once(m)


def test_pytorch_model_bin_with_code_is_refused(tmp_path: Path) -> None:
    _, folder = gpt2(tmp_path / "gpt2")
    os.remove(folder / "model.safetensors")
    torch.save({"w": torch.zeros(2), "x": os.system}, folder / "pytorch_model.bin")  # wants a global outside the allowlist
    from dldoctor.errors import UnsafeModelError

    with pytest.raises(UnsafeModelError):
        load(str(folder), LoadOptions())


def test_hub_cache_layout(tmp_path: Path) -> None:
    m, _ = gpt2(tmp_path / "src")
    entry = tmp_path / "hub" / "models--tiny--gpt2"
    shutil.copytree(tmp_path / "src", entry / "snapshots" / "abc123")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("abc123")
    assert is_hf_folder(str(entry))
    loaded = load(str(entry), LoadOptions())
    assert loaded.name == "tiny/gpt2" and params_once(loaded.module) == params_once(m)
    assert expand([str(tmp_path / "hub")]) == [str(entry)]
    shutil.copytree(tmp_path / "src", entry / "snapshots" / "def456")
    with pytest.raises(LoadError, match="2 snapshots: abc123, def456"):
        load(str(entry), LoadOptions())


CANARY_CODE = '''
import pathlib
pathlib.Path({canary!r}).write_text("ran")
from transformers import PretrainedConfig
class EvilConfig(PretrainedConfig):
    model_type = "evil"
'''


def test_auto_map_code_never_runs(tmp_path: Path) -> None:
    """An auto_map folder reports its weights alone (exit 0) with a note naming --trust; its code is not imported."""
    _, folder = gpt2(tmp_path / "evil")
    canary = tmp_path / "canary"
    (folder / "configuration_evil.py").write_text(CANARY_CODE.format(canary=str(canary)))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded = load(str(folder), LoadOptions())
    assert loaded.module is None and loaded.tensors
    assert any("--trust" in n and "auto_map" in n for n in loaded.notes)
    out = subprocess.run([sys.executable, "-m", "dldoctor", "inspect", str(folder)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "--trust" in out.stdout + out.stderr
    assert not canary.exists()


def test_folder_of_model_files_is_still_a_scan(tmp_path: Path) -> None:
    for n in ("a.pt", "b.pt"):
        torch.save({"w": torch.zeros(2)}, tmp_path / n)
    assert not is_hf_folder(str(tmp_path))
    assert expand([str(tmp_path)]) == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]


def test_without_transformers_one_line_names_the_extra(tmp_path: Path) -> None:
    _, folder = gpt2(tmp_path / "gpt2")
    code = ("import sys; sys.modules['transformers'] = None; sys.modules['timm'] = None; "
            f"sys.argv = ['dldoctor', 'inspect', {str(folder)!r}]; from dldoctor.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert text.count('pip install "dldoctor[hf]"') == 1
    assert "lm_head" not in text and "transformer.wte.weight" in text  # the tensor table of the weights


def test_timm_folder(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    folder = tmp_path / "timm-resnet"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(m.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet10t", "num_classes": 7, "num_features": 512,
                                                    "pretrained_cfg": {"input_size": [3, 224, 224]}}))
    loaded = load(str(folder), LoadOptions())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), m(x))
    r = inspect(str(folder), input_shapes=[[1, 3, 64, 64]])
    assert r.params.total == params_once(m) and r.flops.status == "complete"
    r = inspect(str(folder), training=False)  # the input from pretrained_cfg.input_size, assumed
    assert [(i.shape, i.assumed) for i in r.inputs] == [([1, 3, 224, 224], True)]


def test_sample_folder_builds_and_inspects(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from sample_models.build import build_hf_gpt2
    finally:
        sys.path.remove(str(ROOT))
    folder = build_hf_gpt2(tmp_path)
    r = inspect(str(folder))
    assert r.model.format == "hf-folder" and r.flops.status == "complete"
    assert r.inputs[0].shape == [1, 128] and r.inputs[0].dtype == "int64"


def test_encoder_decoder_inputs_come_from_config(tmp_path: Path) -> None:
    cfg = transformers.T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=100)
    folder = _save(transformers.T5ForConditionalGeneration(cfg), tmp_path / "t5")
    loaded = load(str(folder), LoadOptions(device="meta"))
    assert loaded.inputs == [("input_ids", [1, 128], "int64"), ("decoder_input_ids", [1, 128], "int64")]
    r = inspect(str(folder), device="meta")  # runs with both, named, marked assumed
    assert [(i.name, i.assumed) for i in r.inputs] == [("input_ids", True), ("decoder_input_ids", True)]
    assert r.flops.status == "complete"


def test_sharded_pytorch_model_bin(tmp_path: Path) -> None:
    m, folder = llama(tmp_path / "llama")
    os.remove(folder / "model.safetensors")
    sd = m.state_dict()
    names = list(sd)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for f, keys in halves.items():
        torch.save({k: sd[k] for k in keys}, folder / f)
    index = {"metadata": {}, "weight_map": {k: f for f, keys in halves.items() for k in keys}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    loaded = load(str(folder), LoadOptions())
    ids = torch.randint(0, 200, (1, T))
    with torch.no_grad():
        assert torch.allclose(loaded.module(input_ids=ids).logits, m(input_ids=ids).logits, atol=1e-5)


def test_index_naming_a_shard_outside_the_folder_is_refused(tmp_path: Path) -> None:
    m, folder = llama(tmp_path / "llama", max_shard_size="50KB")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(next(folder.glob("model-*.safetensors")), outside)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../outside.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(LoadError, match="outside the folder"):
        load(str(folder), LoadOptions(device="meta"))


def test_folder_sha256_covers_config_and_weights(tmp_path: Path) -> None:
    _, folder = gpt2(tmp_path / "gpt2")
    a = load(str(folder), LoadOptions(device="meta")).sha256
    assert a and a == load(str(folder), LoadOptions(device="meta")).sha256
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-6
    (folder / "config.json").write_text(json.dumps(cfg))
    assert load(str(folder), LoadOptions(device="meta")).sha256 not in (None, a)
    assert load(str(folder), LoadOptions(device="meta", hash_limit=10)).sha256 is None


def test_arch_with_a_folder_is_an_error_not_ignored(tmp_path: Path) -> None:
    _, folder = gpt2(tmp_path / "gpt2")
    with pytest.raises(LoadError, match="--arch does not apply"):
        load(str(folder), LoadOptions(arch="torch.nn:Linear(2, 2)"))
    out = subprocess.run([sys.executable, "-m", "dldoctor", "inspect", str(folder), "--arch", "torch.nn:Linear(2,2)"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2 and "--arch does not apply" in out.stderr and "Traceback" not in out.stderr


TRUSTED_CODE = '''
import pathlib
import torch
from transformers import PretrainedConfig, PreTrainedModel

pathlib.Path({canary!r}).write_text("ran")


class TinyConfig(PretrainedConfig):
    model_type = "tiny-trusted"

    def __init__(self, width=8, **kw):
        self.width = width
        super().__init__(**kw)


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)
'''


def test_auto_map_folder_runs_its_code_only_with_trust(tmp_path: Path) -> None:
    """With --trust the code the folder ships (auto_map) builds the model: exact parameters and MACs; without it the
    same folder gives the weights alone and the code never runs."""
    folder = tmp_path / "trusted"
    folder.mkdir()
    canary = tmp_path / "canary"
    (folder / "modeling_tiny.py").write_text(TRUSTED_CODE.format(canary=str(canary)))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "tiny-trusted", "width": 8, "architectures": ["TinyModel"],
        "auto_map": {"AutoConfig": "modeling_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"}}))
    from safetensors.torch import save_file

    save_file({"proj.weight": torch.randn(8, 8), "proj.bias": torch.zeros(8)}, str(folder / "model.safetensors"))
    untrusted = load(str(folder), LoadOptions())
    assert untrusted.module is None and not canary.exists()
    r = inspect(str(folder), input_shapes=[[1, 8]], load_options=LoadOptions(trust=True), training=False)
    assert canary.exists()  # the folder's code ran: that is what --trust is for
    assert r.params.total == 72 and r.flops.macs == 64 and r.flops.status == "complete"
