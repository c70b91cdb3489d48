"""The memory plan of a decoder (collect/llm_plan.py): every figure against a hand derivation, the sharded
ones also against what FSDP2 (`fully_shard`) holds per rank in a 2-process gloo run."""
from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.collect.llm_plan import (LLMArch, arch_from_config, build_plan, layer_activation_bytes, lora_params,
                                       model_states)
from dldoctor.collect.torch_model import llm_plan_for
from dldoctor.report.llm_types import PlanOptions
from dldoctor.report.types import Report

# Llama-2-7B: 32 layers, hidden 4096, 32 heads (kv 32), head_dim 128, intermediate 11008, vocab 32000, untied
L, H, NH, HD, I, V = 32, 4096, 32, 128, 11008, 32000
# by hand: per layer q,k,v,o 4·H² + gate/up/down 3·H·I + two RMSNorm weights 2·H; final norm H; embed + lm_head 2·V·H
LLAMA2_PARAMS = L * (4 * H * H + 3 * H * I + 2 * H) + H + 2 * V * H
assert LLAMA2_PARAMS == 6_738_415_616


def llama_arch(kv: int = 32, total: int | None = None, dtype: str = "float16", eager: bool = True) -> LLMArch:
    if total is None:
        total = L * (2 * H * NH * HD + 2 * H * kv * HD + 3 * H * I + 2 * H) + H + 2 * V * H
    return LLMArch(L, H, NH, kv, HD, I, V, False, total, V * H, 2 * total, dtype, eager_attention=eager)


# -- hand derivations -----------------------------------------------------------------------------------------

def test_kv_cache_llama2_7b_fp16():
    p = build_plan(llama_arch(), PlanOptions(), context=4096, batch=1)
    assert p.kv_cache_bytes_per_token == 2 * L * 32 * HD * 2 == 524_288
    assert p.kv_cache_bytes == 524_288 * 4096 == 2 * 2**30
    assert build_plan(llama_arch(), PlanOptions(), 4096, 8).kv_cache_bytes == 16 * 2**30
    # the cache dtype is a choice: fp32 doubles it, fp8 halves it
    assert build_plan(llama_arch(), PlanOptions(kv_dtype="fp32"), 1, 1).kv_cache_bytes_per_token == 2 * 524_288
    assert build_plan(llama_arch(), PlanOptions(kv_dtype="fp8"), 1, 1).kv_cache_bytes_per_token == 524_288 // 2


def test_gqa_shrinks_the_cache_4x():
    mha, gqa = build_plan(llama_arch(32), PlanOptions(), 8192, 1), build_plan(llama_arch(8), PlanOptions(), 8192, 1)
    assert gqa.kv_cache_bytes_per_token == 2 * L * 8 * HD * 2 == 131_072
    assert mha.kv_cache_bytes == 4 * gqa.kv_cache_bytes


def test_parameters_split_and_mlp_read_off_the_count():
    a = llama_arch()
    assert a.params_total == LLAMA2_PARAMS
    p = build_plan(a, PlanOptions(), 128, 1)
    assert p.params_embedding == V * H == 131_072_000
    assert p.params_non_embedding == 6_607_343_616  # the untied LM head is not an embedding table
    assert p.architecture["mlp_matrices"] == 3  # gated (SwiGLU)


def test_flops_per_token_prefill_and_decode():
    a = llama_arch()
    lin = L * (4 * H * H + 3 * H * I) + V * H  # MACs of the weight matrices per token
    assert lin == 6_607_077_376
    p = build_plan(a, PlanOptions(), 128, 1)
    # prefill at T=128: T·lin + QKᵀ and AV at the full T×T (2·L·heads·head_dim·T²), ×2 FLOPs per MAC
    assert p.prefill_flops == 2 * (128 * lin + 2 * L * NH * HD * 128 * 128) == 1_700_001_742_848  # 850.0 GMACs
    assert p.flops_per_token_prefill == p.prefill_flops // 128
    assert build_plan(a, PlanOptions(), 128, 4).prefill_flops == 4 * p.prefill_flops  # the whole batch
    # one decode step at context 4096: one query against 4096 keys
    d = build_plan(a, PlanOptions(), 4096, 1)
    assert d.flops_per_token_decode == 2 * (lin + 2 * L * NH * HD * 4096) == 15_361_638_400


def test_lora_trainable_parameters():
    r = 16
    # q, k, v, o each r·(in + out), MHA: all 4096 → 4096
    assert lora_params(llama_arch(), r) == L * 4 * r * (H + H) == 16_777_216
    # GQA (Llama-3-8B-like, kv 8): k and v out = 8·128 = 1024
    assert lora_params(llama_arch(8), r) == L * r * (2 * (H + H) + 2 * (H + 8 * HD)) == 13_631_488
    p = build_plan(llama_arch(), PlanOptions(lora_rank=8), 128, 1)
    assert p.lora_trainable_params == 8_388_608
    lora = p.training["lora"]
    assert (lora["params"], lora["gradients"], lora["optimizer"]) == (2 * 8_388_608, 2 * 8_388_608, 12 * 8_388_608)
    assert lora["frozen_weights"] == 2 * LLAMA2_PARAMS  # the base model in bf16


def test_zero_per_gpu_bytes_at_8_gpus():
    P, N = LLAMA2_PARAMS, 8
    want = {"ddp": (2 * P, 2 * P, 12 * P), "zero1": (2 * P, 2 * P, 12 * P // N),
            "zero2": (2 * P, 2 * P // N, 12 * P // N), "zero3": (2 * P // N, 2 * P // N, 12 * P // N)}
    totals = {"ddp": 107_814_649_856, "zero1": 37_061_285_888, "zero2": 25_269_058_560, "zero3": 13_476_831_232}
    for strategy, (w, g, o) in want.items():
        s = model_states(P, N, strategy)
        assert (s["params"], s["gradients"], s["optimizer"]) == (w, g, o), strategy
        assert sum(s.values()) == totals[strategy]
        plan = build_plan(llama_arch(), PlanOptions(gpus=N, strategy=strategy), 4096, 1)
        assert plan.per_gpu["total"] == totals[strategy] + plan.per_gpu["activations"]
    assert sum(model_states(P, 1, "ddp").values()) == 16 * P  # 2 + 2 + 12 bytes per parameter


def test_activations_match_korthikanti_without_dropout():
    # MHA, non-gated MLP with I = 4h, eager attention: Korthikanti et al. give 34·sbh + 5·a·s²·b bytes per layer,
    # of which the dropout masks and dropout output are 2·sbh + 3·a·s²·b; no dropout leaves 32·sbh + 2·a·s²·b
    s, b, h, a = 512, 2, 256, 8
    gpt = LLMArch(4, h, a, a, h // a, 4 * h, 1000, True, 4 * (4 * h * h + 2 * 4 * h * h) + 1000 * h, 1000 * h, 0)
    assert gpt.mlp_matrices == 2
    assert layer_activation_bytes(gpt, s, b) == 32 * s * b * h + 2 * a * s * s * b
    fused = LLMArch(**{**gpt.__dict__, "eager_attention": False})
    assert layer_activation_bytes(fused, s, b) == 32 * s * b * h


def test_training_and_inference_totals():
    a = llama_arch(eager=False)
    s, b = 4096, 1
    p = build_plan(a, PlanOptions(), s, b)
    per_layer = 2 * s * b * (4 * H + 2 * NH * HD + 2 * 32 * HD + 4 * I)  # fused attention: no s² term
    head = 2 * s * b * H + 4 * s * b * V  # final norm input, fp32 logits
    full = p.training["full"]
    assert full["activations"] == L * per_layer + head
    assert full["activations_checkpointed"] == L * 2 * s * b * H + per_layer + head
    assert full["total"] == 16 * LLAMA2_PARAMS + full["activations"]
    assert full["total_checkpointed"] == 16 * LLAMA2_PARAMS + full["activations_checkpointed"]
    inf = p.inference
    assert inf["weights"] == 2 * LLAMA2_PARAMS
    assert inf["activations"] == 2 * b * (2 * s * H + 2 * I * s) + 4 * b * V
    assert inf["total"] == inf["weights"] + 2 * 2**30 + inf["activations"]


# -- from a module ----------------------------------------------------------------------------------------------

class _Block(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        h, nh, kv, hd, i = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size
        self.nh, self.kv, self.hd = nh, kv, hd
        self.q, self.k, self.v = nn.Linear(h, nh * hd, bias=False), nn.Linear(h, kv * hd, bias=False), nn.Linear(h, kv * hd, bias=False)
        self.o = nn.Linear(nh * hd, h, bias=False)
        self.gate, self.up, self.down = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False), nn.Linear(i, h, bias=False)
        self.n1, self.n2 = nn.RMSNorm(h), nn.RMSNorm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        y = self.n1(x)
        q = self.q(y).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k(y).view(b, t, self.kv, self.hd).transpose(1, 2).repeat_interleave(self.nh // self.kv, 1)
        v = self.v(y).view(b, t, self.kv, self.hd).transpose(1, 2).repeat_interleave(self.nh // self.kv, 1)
        att = (q @ k.transpose(-1, -2)).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, -1))
        y = self.n2(x)
        return x + self.down(nn.functional.silu(self.gate(y)) * self.up(y))


class TinyForCausalLM(nn.Module):
    """A Llama-shaped decoder with a transformers-style config, no transformers needed."""

    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      head_dim=8, intermediate_size=64, vocab_size=100, tie_word_embeddings=tied)
        c = self.config
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(_Block(c) for _ in range(c.num_hidden_layers))
        self.norm = nn.RMSNorm(c.hidden_size)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def tiny_tied() -> TinyForCausalLM:
    return TinyForCausalLM(tied=True)


def test_plan_from_module_matches_the_counted_macs():
    import dldoctor

    m = TinyForCausalLM()
    r = dldoctor.inspect(m, input_shapes=[[2, 24]], dtype="int64", receptive_field=False,
                         plan=PlanOptions(gpus=2, strategy="zero2"))
    p = r.llm_plan
    assert p is not None and (p.context, p.batch_size) == (24, 2)  # the input's (batch, T)
    assert p.params_total == r.params.total and p.params_embedding == 100 * 32
    assert p.kv_cache_bytes_per_token == 2 * 2 * 2 * 8 * 4  # fp32 model: the cache in fp32
    # the plan's prefill FLOPs (batch 2 × T 24) are what the tracer counts for the same forward
    assert r.flops.status == "complete"
    assert p.prefill_flops == r.flops.flops == 2 * p.flops_per_token_prefill * 24
    # tied: the LM head is the embedding, counted once, still a matmul
    t = llm_plan_for(tiny_tied(), PlanOptions(context=24, batch_size=2))
    assert t.params_total == p.params_total - 3200 and t.prefill_flops == p.prefill_flops
    assert t.architecture["tied_embeddings"] is True
    # JSON round trip
    back = Report.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.llm_plan == p and r.to_dict()["llm_plan"]["per_gpu"]["gradients"] == -(-2 * p.params_total // 2)


def test_on_meta_the_weights_are_the_configs_dtype():
    with torch.device("meta"):
        m = TinyForCausalLM()
    m.config.torch_dtype = "bfloat16"  # a folder's config.json: the file holds bf16, the meta module is fp32
    p = llm_plan_for(m, PlanOptions(context=10))
    total = sum(x.numel() for x in m.parameters())
    assert (p.weight_dtype, p.kv_dtype, p.inference["weights"]) == ("bfloat16", "bfloat16", 2 * total)
    assert p.kv_cache_bytes_per_token == 2 * 2 * 2 * 8 * 2
    m = TinyForCausalLM()  # real values: their own dtype wins
    m.config.torch_dtype = "bfloat16"
    assert llm_plan_for(m, None).weight_dtype == "float32"


def test_no_plan_without_a_decoder_config():
    assert llm_plan_for(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10)), None) is None  # no config: nothing inferred
    m = TinyForCausalLM()
    m.config.is_encoder_decoder = True
    assert llm_plan_for(m, None) is None
    m = TinyForCausalLM()
    del m.config.num_attention_heads
    assert llm_plan_for(m, None) is None
    enc = nn.Linear(2, 2)
    enc.config = TinyForCausalLM().config  # a config, but not a causal LM
    assert llm_plan_for(enc, None) is None
    assert arch_from_config({"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 5},
                            100, 40, 400, "float32").intermediate == 32  # dict configs, defaults 4·h


def test_llama2_7b_on_meta_with_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(num_hidden_layers=L, hidden_size=H, num_attention_heads=NH, num_key_value_heads=32,
                                   head_dim=HD, intermediate_size=I, vocab_size=V, tie_word_embeddings=False)
    t0 = time.perf_counter()
    with torch.device("meta"):
        m = transformers.LlamaForCausalLM(cfg).to(torch.float16)
    p = llm_plan_for(m, PlanOptions(context=4096, gpus=8, strategy="zero3"))
    assert time.perf_counter() - t0 < 30
    assert p.params_total == LLAMA2_PARAMS and p.params_embedding == V * H
    assert p.kv_cache_bytes_per_token == 524_288 and p.weight_dtype == "float16"
    assert p.per_gpu["params"] + p.per_gpu["gradients"] + p.per_gpu["optimizer"] == 13_476_831_232
    assert p.lora_trainable_params == 16_777_216


def test_transformers_gpt2_tied_and_llama_gqa_match_the_counted_flops():
    transformers = pytest.importorskip("transformers")
    import dldoctor

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300,
                                                                n_positions=64))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
        vocab_size=300, max_position_embeddings=64))
    want = {  # (tied, mlp matrices, kv heads, embedding parameters: GPT-2's token and position tables)
        "GPT2LMHeadModel": (True, 2, 4, 300 * 64 + 64 * 64),
        "LlamaForCausalLM": (False, 3, 2, 300 * 64),
    }
    for m in (gpt2, llama):
        r = dldoctor.inspect(m, input_shapes=[[2, 16]], dtype="int64", receptive_field=False, training=False)
        p, a = r.llm_plan, r.llm_plan.architecture
        assert (a["tied_embeddings"], a["mlp_matrices"], a["n_kv_heads"], p.params_embedding) == want[type(m).__name__]
        assert p.params_total == r.params.total
        assert r.flops.status == "complete" and abs(p.prefill_flops - r.flops.flops) <= 1e-3 * r.flops.flops
        assert p.kv_cache_bytes_per_token == 2 * 2 * a["n_kv_heads"] * 16 * 4


# -- the CLI ----------------------------------------------------------------------------------------------------

def test_cli_memory_plan_block_and_json():
    from dldoctor.cli import app

    runner = CliRunner()
    spec = "tests.collect.test_llm_plan:TinyForCausalLM"
    r = runner.invoke(app, ["inspect", spec, "-s", "1,16", "--dtype", "int64", "--no-rules", "--context", "64",
                            "--gpus", "4", "--strategy", "zero3", "--kv-dtype", "bf16"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "memory plan" in r.output and "128 B/token bfloat16" in r.output and "zero3" in r.output
    r = runner.invoke(app, ["inspect", spec, "-s", "1,16", "--dtype", "int64", "--no-rules", "-f", "json"])
    d = json.loads(r.output)["llm_plan"]
    assert (d["context"], d["strategy"], d["gpus"], d["lora_rank"]) == (16, "ddp", 1, 16)
    r = runner.invoke(app, ["inspect", spec, "--strategy", "zero4"])
    assert r.exit_code == 2 and "zero4" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["inspect", spec, "--gpus", "0"])
    assert r.exit_code == 2 and "--gpus" in r.output


# -- against FSDP2 ----------------------------------------------------------------------------------------------

def _fsdp_rank(rank: int, port: int, queue) -> None:  # pragma: no cover - runs in a spawned process
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        m = TinyForCausalLM()
        for layer in m.layers:
            fully_shard(layer)
        fully_shard(m)
        opt = torch.optim.AdamW(m.parameters())
        m(torch.randint(0, 100, (2, 8))).float().logsumexp(-1).mean().backward()
        opt.step()

        def nb(t: torch.Tensor) -> int:
            t = t.to_local() if hasattr(t, "to_local") else t
            return t.numel() * t.element_size()

        params = sum(nb(p) for p in m.parameters())
        grads = sum(nb(p.grad) for p in m.parameters())
        states = sum(nb(v) for s in opt.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq"))
        queue.put((rank, params, grads, states))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_zero3_matches_fsdp2_per_rank():
    import torch.multiprocessing as mp

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    queue = mp.get_context("spawn").SimpleQueue()
    ctx = mp.spawn(_fsdp_rank, args=(port, queue), nprocs=2, join=False)
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the FSDP2 run did not finish in 150 s")
    ranks = [queue.get() for _ in range(2)]
    total = sum(p.numel() for p in TinyForCausalLM().parameters())
    # FSDP2 trains in fp32 here: sharded fp32 weights (the master copy), fp32 gradients, fp32 Adam m and v
    fp32 = model_states(total, 2, "zero3", {"params": 4, "gradients": 4, "optimizer": 8})
    plan = build_plan(LLMArch(2, 32, 4, 2, 8, 64, 100, False, total, 3200, 4 * total), PlanOptions(gpus=2, strategy="zero3"), 8, 2)
    mixed = plan.per_gpu["params"] + plan.per_gpu["gradients"] + plan.per_gpu["optimizer"]
    for _, params, grads, states in ranks:
        for got, want in ((params, fp32["params"]), (grads, fp32["gradients"]), (states, fp32["optimizer"])):
            assert abs(got - want) <= 0.05 * want, (got, want)
        # 16 bytes per parameter either way (bf16 mixed: 2 + 2 + 12; FSDP2 in fp32: 4 + 4 + 8), split over 2 ranks
        assert abs(params + grads + states - mixed) <= 0.05 * mixed
    assert sum(r[1] for r in ranks) == 4 * total  # the shards add up to the whole model
