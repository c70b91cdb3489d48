"""The eight Hugging Face families of issue 14 as save_pretrained folders: parameters exact, MACs equal to a hand
count at the keyword inputs given (attention at the full T x T, as FlopCounterMode counts it), status complete, and
the inputs dldoctor assumes from config.json when none are given (marked assumed, named)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
tf = pytest.importorskip("transformers")
tf.utils.logging.set_verbosity_error()

from dldoctor.api.inspect import inspect  # noqa: E402
from dldoctor.collect.inputs import InputSpec  # noqa: E402


def _layer(T: int, H: int, I: int, kv: int | None = None, gated: bool = False) -> int:
    """One pre-/post-norm transformer layer over T tokens: q and o (T H^2 each), k and v (T H kv each, kv = H
    without GQA), QK^T and AV (T^2 H each), and the MLP (2 or, gated, 3 matrices of H x I)."""
    kv = H if kv is None else kv
    return 2 * T * H * H + 2 * T * H * kv + 2 * T * T * H + (3 if gated else 2) * T * H * I


def bert(p: Path) -> tuple[Any, dict, int]:
    L, H, I, V, T = 2, 32, 64, 120, 16
    cfg = tf.BertConfig(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, intermediate_size=I,
                        vocab_size=V, max_position_embeddings=64)
    m = tf.BertModel(cfg)
    return m, {"input_ids": [1, T]}, L * _layer(T, H, I) + H * H  # + the pooler on the first token


def gpt2(p: Path) -> tuple[Any, dict, int]:
    L, H, V, T = 2, 32, 100, 16
    cfg = tf.GPT2Config(n_layer=L, n_embd=H, n_head=2, vocab_size=V, n_positions=64)
    m = tf.GPT2LMHeadModel(cfg)  # lm_head tied to wte: saved once
    return m, {"input_ids": [1, T]}, L * _layer(T, H, 4 * H) + T * H * V


def llama(p: Path) -> tuple[Any, dict, int]:
    L, H, I, V, T, heads, kvh = 2, 64, 128, 200, 16, 4, 2
    cfg = tf.LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=heads,
                         num_key_value_heads=kvh, vocab_size=V, max_position_embeddings=128, tie_word_embeddings=False)
    m = tf.LlamaForCausalLM(cfg)
    return m, {"input_ids": [1, T]}, L * _layer(T, H, I, kv=H * kvh // heads, gated=True) + T * H * V


def mixtral(p: Path) -> tuple[Any, dict, int]:
    L, H, I, V, T, heads, kvh, E, k = 2, 64, 96, 150, 16, 4, 2, 4, 2
    cfg = tf.MixtralConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                           num_attention_heads=heads, num_key_value_heads=kvh, num_local_experts=E,
                           num_experts_per_tok=k, max_position_embeddings=128)
    m = tf.MixtralForCausalLM(cfg)
    attn = 2 * T * H * H + 2 * T * H * (H * kvh // heads) + 2 * T * T * H
    experts = T * k * 3 * H * I + T * H * E  # each token through k gated experts, and the router
    return m, {"input_ids": [1, T]}, L * (attn + experts) + T * H * V


def t5(p: Path) -> tuple[Any, dict, int]:
    L, H, F, heads, dkv, V, Te, Td = 2, 32, 64, 2, 16, 100, 16, 8
    cfg = tf.T5Config(d_model=H, d_ff=F, num_layers=L, num_decoder_layers=L, num_heads=heads, d_kv=dkv,
                      vocab_size=V)
    m = tf.T5ForConditionalGeneration(cfg)
    inner = heads * dkv
    enc = 4 * Te * H * inner + 2 * Te * Te * inner + 2 * Te * H * F
    dec = (4 * Td * H * inner + 2 * Td * Td * inner  # self-attention
           + 2 * Td * H * inner + 2 * Te * H * inner + 2 * Td * Te * inner  # cross: q, o; k, v of the encoder
           + 2 * Td * H * F)
    return m, {"input_ids": [1, Te], "decoder_input_ids": [1, Td]}, L * (enc + dec) + Td * H * V


def vit(p: Path) -> tuple[Any, dict, int]:
    L, H, I, S, P, C, labels = 2, 32, 64, 32, 8, 3, 5
    cfg = tf.ViTConfig(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, intermediate_size=I,
                       image_size=S, patch_size=P, num_channels=C, num_labels=labels)
    m = tf.ViTForImageClassification(cfg)
    N = (S // P) ** 2
    T = N + 1  # patches and the class token
    return m, {"pixel_values": [1, C, S, S]}, N * C * P * P * H + L * _layer(T, H, I) + H * labels


def clip(p: Path) -> tuple[Any, dict, int]:
    Lt, Ht, It, Vt, Tt = 2, 32, 64, 99, 12
    Lv, Hv, Iv, S, P = 2, 48, 96, 32, 8
    proj = 24
    cfg = tf.CLIPConfig(
        text_config=dict(hidden_size=Ht, intermediate_size=It, num_hidden_layers=Lt, num_attention_heads=2,
                         vocab_size=Vt, max_position_embeddings=40),
        vision_config=dict(hidden_size=Hv, intermediate_size=Iv, num_hidden_layers=Lv, num_attention_heads=2,
                           image_size=S, patch_size=P),
        projection_dim=proj)
    m = tf.CLIPModel(cfg)
    N = (S // P) ** 2
    text = Lt * _layer(Tt, Ht, It) + Ht * proj  # the pooled token projected
    vision = N * 3 * P * P * Hv + Lv * _layer(N + 1, Hv, Iv) + Hv * proj
    return m, {"input_ids": [1, Tt], "pixel_values": [1, 3, S, S]}, text + vision + proj  # + the similarity


def whisper(p: Path) -> tuple[Any, dict, int]:
    L, d, F, mels, S, V, Td = 2, 32, 64, 8, 24, 90, 8
    cfg = tf.WhisperConfig(d_model=d, encoder_layers=L, decoder_layers=L, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=F, decoder_ffn_dim=F, num_mel_bins=mels,
                           max_source_positions=S, max_target_positions=32, vocab_size=V, pad_token_id=1,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    m = tf.WhisperForConditionalGeneration(cfg)
    frames = 2 * S
    convs = frames * mels * 3 * d + S * d * 3 * d  # conv1 (stride 1) and conv2 (stride 2) of kernel 3
    enc = L * _layer(S, d, F)
    dec = L * (_layer(Td, d, F) + 2 * Td * d * d + 2 * S * d * d + 2 * Td * S * d)  # + cross-attention
    return m, {"input_features": [1, mels, frames], "decoder_input_ids": [1, Td]}, convs + enc + dec + Td * d * V


FAMILIES: dict[str, Callable[[Path], tuple[Any, dict, int]]] = {
    "bert": bert, "gpt2": gpt2, "llama": llama, "mixtral": mixtral, "t5": t5, "vit": vit, "clip": clip,
    "whisper": whisper}


def _folder(name: str, tmp_path: Path) -> tuple[Any, dict, int, Path]:
    torch.manual_seed(0)
    m, inputs, macs = FAMILIES[name](tmp_path)
    folder = tmp_path / name
    kw = {"max_shard_size": "60KB"} if name == "llama" else {}
    m.eval().save_pretrained(str(folder), **kw)
    return m, inputs, macs, folder


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_exact_at_keyword_inputs(name: str, tmp_path: Path) -> None:
    m, inputs, hand, folder = _folder(name, tmp_path)
    specs = [InputSpec(tuple(s), None, k) for k, s in inputs.items()]
    r = inspect(str(folder), input_shapes=specs, training=False, receptive_field=False)
    assert r.model.format == "hf-folder"
    assert r.params.total == sum(p.numel() for p in m.parameters())
    assert r.flops.status == "complete", (r.flops.uncounted_ops, r.flops.reason)
    assert abs(r.flops.macs - hand) <= 0.01 * hand, (r.flops.macs, hand)
    assert [i.name for i in r.inputs] == list(inputs) and not any(i.assumed for i in r.inputs)


EXPECTED_DEFAULTS = {  # what config.json gives when no input is passed: (name, shape, dtype)
    "bert": [(None, [1, 64], "int64")],  # max_position_embeddings 64 < 128
    "gpt2": [(None, [1, 64], "int64")],
    "llama": [(None, [1, 128], "int64")],
    "mixtral": [(None, [1, 128], "int64")],
    "t5": [("input_ids", [1, 128], "int64"), ("decoder_input_ids", [1, 128], "int64")],
    "vit": [(None, [1, 3, 32, 32], "float32")],
    "clip": [("input_ids", [1, 40], "int64"), ("pixel_values", [1, 3, 32, 32], "float32")],
    "whisper": [("input_features", [1, 8, 48], "float32"), ("decoder_input_ids", [1, 32], "int64")],
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_inputs_assumed_from_config(name: str, tmp_path: Path) -> None:
    _, _, _, folder = _folder(name, tmp_path)
    r = inspect(str(folder), training=False, receptive_field=False)
    assert [(i.name, i.shape, i.dtype) for i in r.inputs] == EXPECTED_DEFAULTS[name]
    assert all(i.assumed for i in r.inputs)
    assert r.flops.status == "complete", (r.flops.uncounted_ops, r.flops.reason)
    said = [d.message for d in r.diagnostics if "assumed" in d.message]
    assert said and "config.json" in said[0], [d.message for d in r.diagnostics]


def test_mixtral_per_expert_layout_loads_real_values(tmp_path: Path) -> None:
    """save_pretrained writes Mixtral's experts one tensor each (the hub's layout); transformers merges them on load.
    The folder loads with the same outputs as the model saved, and on meta with a note saying why."""
    from dldoctor.load import load
    from dldoctor.load.base import LoadOptions

    m, _, _, folder = _folder("mixtral", tmp_path)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert any(".experts.0.w1." in k for k in f.keys())  # the older layout, converted on load
    loaded = load(str(folder), LoadOptions())
    ids = torch.randint(0, 150, (1, 8))
    with torch.no_grad():
        assert torch.allclose(loaded.module(input_ids=ids).logits, m(input_ids=ids).logits, atol=1e-5)
    meta = load(str(folder), LoadOptions(device="meta"))
    assert all(p.is_meta for p in meta.module.parameters())
    assert any("older tensor layout" in n for n in meta.notes)


@pytest.mark.parametrize("name", ["t5", "whisper", "llama", "bert"])
def test_compress_takes_the_inputs_config_json_names(name: str, tmp_path: Path) -> None:
    """compress on a folder with the inputs config.json gives (T5: input_ids and decoder_input_ids; Whisper: float
    input_features and int64 decoder_input_ids; Llama: GQA attention, which the ONNX exporter takes only in its
    eager form; BERT: torch's int8 tables cannot take its expanded token_type_ids, so they stay float): the ONNX
    variants are made, each graph input keeps its keyword, and the graph run here on a feed by name gives the
    model's own logits."""
    import onnxruntime as ort

    from dldoctor.api.compress import compress
    from dldoctor.collect.probe import _first_tensor
    from dldoctor.collect.inputs import split_inputs
    from dldoctor.load import LoadOptions, load

    m, _, _, folder = _folder(name, tmp_path)
    r = compress(str(folder), out_dir=str(tmp_path / "out"), transforms=["onnx-optimized", "torch-int8-dynamic"],
                 keep_rejected=True, iters=3, held=16, budget=0.3)
    names = [i.name for i in r.inputs]
    assert all(i.assumed for i in r.inputs) and not any("ONNX export failed" in n for n in r.compress.notes)
    by = {v.name: v for v in r.compress.variants}
    assert by["onnx-optimized"].status != "failed" and by["onnx-optimized"].fidelity.cosine > 0.9999, by
    assert by["torch-int8-dynamic"].status != "failed" and by["torch-int8-dynamic"].fidelity.cosine > 0.99
    sess = ort.InferenceSession(by["onnx-optimized"].path, providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in sess.get_inputs()]
    loaded = load(str(folder), LoadOptions())
    from dldoctor.collect.inputs import from_infos

    args, kw = split_inputs(from_infos(loaded.module, r.inputs, seed=5, batch=2))
    feed = {**{n: a for n, a in zip(graph_inputs, args)}, **kw}
    assert set(graph_inputs) == set(feed) and set(kw) <= set(graph_inputs) and names == [None] * len(args) + list(kw)
    with torch.no_grad():
        want = _first_tensor(m(*args, **kw)).numpy()  # the logits (BERT: the last hidden state)
    got = sess.run(None, {k: v.numpy() for k, v in feed.items()})[0]
    assert got.shape == want.shape and abs(got - want).max() < 1e-3


def test_onnx_export_puts_the_attention_setting_back(tmp_path: Path) -> None:
    """The export switches a Hugging Face model to eager attention (the exporter has no GQA form of
    scaled_dot_product_attention) and back: the model is left as found."""
    from dldoctor.transforms.onnx_variants import export_onnx

    m, _, _, _ = _folder("llama", tmp_path)
    was = m.config._attn_implementation
    assert was != "eager"
    export_onnx(m, (torch.randint(0, 200, (1, 8)),), str(tmp_path / "l.onnx"))
    assert m.config._attn_implementation == was and m.model.layers[0].self_attn.config._attn_implementation == was


@pytest.mark.parametrize("name, loss", [("t5", "ce"), ("whisper", "ce"), ("clip", "contrastive")])
def test_probe_runs_on_folders_whose_inputs_are_all_named(name: str, loss: str, tmp_path: Path) -> None:
    """The probe reads the batch from the first keyword input when config.json names every input (it refused them
    before): T5 and Whisper train their LM head with cross-entropy, CLIP its image-text similarity contrastively."""
    from dldoctor.api.probe import probe

    _, _, _, folder = _folder(name, tmp_path)
    r = probe(str(folder), steps=3, batch_size=4, attribution=False)
    p = r.probe
    assert p.error is None and p.config["loss"] == loss and p.config["batch_size"] == 4
    assert p.inputs["shape"][0] == 4 and p.loss and all(math.isfinite(v) for v in p.loss)
