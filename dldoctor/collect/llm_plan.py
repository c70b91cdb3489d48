"""Memory plan of a decoder (causal LM) at LLM scale: a pure calculator, no torch.

It reads a small architecture description (`LLMArch`: layers, widths, heads, vocabulary, the parameter counts
split embedding / non-embedding) and returns an `LLMPlan`: FLOPs per token, KV cache, inference memory,
training memory (full fine-tuning and LoRA, AdamW under bf16 mixed precision, with and without activation
checkpointing) and the per-GPU share under DDP / ZeRO-1/2/3. Every convention is named in
`LLMPlan.conventions` and in docs/report-schema.md (`llm_plan`); tests/collect/test_llm_plan.py derives each
figure by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dldoctor.report.llm_types import STRATEGIES, LLMPlan, PlanOptions

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp8": "float8_e4m3fn",
                  "float": "float32", "fp64": "float64", "double": "float64"}

# bf16 mixed-precision AdamW (ZeRO paper, Rajbhandari et al. 2020, section 3.1): 2 (bf16 weights) + 2 (bf16
# gradients) + 12 (fp32 master weights 4, Adam m 4, Adam v 4) = 16 bytes per trainable parameter
MIXED_ADAMW = {"params": 2, "gradients": 2, "optimizer": 12}


@dataclass
class LLMArch:
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    params_total: int
    params_embedding: int  # parameters of the embedding tables (token, position), counted once
    weight_bytes: int  # storage of the parameters as they are
    weight_dtype: str = "float32"
    eager_attention: bool = True  # the attention probabilities (heads × s²) are materialised and kept

    @property
    def attn_weights(self) -> int:
        """Weights of q, k, v, o in one layer."""
        return 2 * self.hidden * self.n_heads * self.head_dim + 2 * self.hidden * self.n_kv_heads * self.head_dim

    @property
    def lm_head(self) -> int:
        return self.vocab * self.hidden

    @property
    def mlp_matrices(self) -> int:
        """hidden×intermediate matrices per layer: 3 for a gated MLP (SwiGLU: gate, up, down), 2 otherwise;
        read off the parameter count, so no config name has to say it."""
        untied_head = 0 if self.tied_embeddings else self.lm_head
        rest = self.params_total - self.params_embedding - untied_head - self.n_layers * self.attn_weights
        per = self.n_layers * self.hidden * self.intermediate
        return max(1, round(rest / per)) if per else 2


def dtype_name(name: str | None) -> str | None:
    if name is None:
        return None
    n = str(name).removeprefix("torch.").lower()
    n = _DTYPE_ALIASES.get(n, n)
    return n if n in DTYPE_BYTES else None


def _get(config: Any, *names: str) -> Any:
    for n in names:
        v = config.get(n) if isinstance(config, dict) else getattr(config, n, None)
        if v is not None:
            return v
    return None


def arch_from_config(config: Any, params_total: int, params_embedding: int, weight_bytes: int,
                     weight_dtype: str) -> LLMArch | None:
    """The architecture of a transformers-style config (an object or a dict), or None when it is not a
    decoder-only model or a field is missing (no plan then: nothing is guessed)."""
    if config is None or _get(config, "is_encoder_decoder"):
        return None
    layers = _get(config, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _get(config, "hidden_size", "n_embd", "d_model")
    heads = _get(config, "num_attention_heads", "n_head")
    vocab = _get(config, "vocab_size")
    if not all(isinstance(v, int) and v > 0 for v in (layers, hidden, heads, vocab)):
        return None
    kv = _get(config, "num_key_value_heads", "n_kv_heads") or heads
    head_dim = _get(config, "head_dim") or hidden // heads
    inter = _get(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    tied = bool(_get(config, "tie_word_embeddings"))
    impl = _get(config, "_attn_implementation", "attn_implementation")
    if not all(isinstance(v, int) and v > 0 for v in (kv, head_dim, inter)):
        return None
    return LLMArch(layers, hidden, heads, kv, head_dim, inter, vocab, tied, params_total, params_embedding,
                   weight_bytes, weight_dtype, eager_attention=impl in (None, "eager"))


def linear_macs_per_token(a: LLMArch) -> int:
    """Multiply-accumulates of the weight matrices for one token: q, k, v, o and the MLP in every layer, and the LM head."""
    return a.n_layers * (a.attn_weights + a.mlp_matrices * a.hidden * a.intermediate) + a.lm_head


def attention_macs(a: LLMArch, queries: int, keys: int) -> int:
    """QKᵀ and the weighted sum over V: 2 · layers · heads · head_dim · queries · keys (the full T×T, as
    FlopCounterMode counts it)."""
    return 2 * a.n_layers * a.n_heads * a.head_dim * queries * keys


def layer_activation_bytes(a: LLMArch, s: int, b: int, act: int = 2) -> int:
    """Activations one layer keeps for its backward at sequence s, batch b, `act` bytes each (Korthikanti et al.
    2022, "Reducing Activation Recomputation", generalised to GQA and gated MLPs, without dropout masks): the
    two norm inputs (2h), the q/k/v input (h), Q and the attention output (2·heads·head_dim), K and V
    (2·kv_heads·head_dim), the MLP input (h) and its hidden tensors (4·I gated: gate, up, act(gate), product;
    2·I otherwise), plus, under eager attention only, the softmax output heads·s² (fused attention kernels,
    sdpa / flash, keep no s² tensor)."""
    width = (4 * a.hidden + 2 * a.n_heads * a.head_dim + 2 * a.n_kv_heads * a.head_dim
             + (4 if a.mlp_matrices >= 3 else 2) * a.intermediate)
    return act * (s * b * width + (b * a.n_heads * s * s if a.eager_attention else 0))


def head_activation_bytes(a: LLMArch, s: int, b: int, act: int = 2) -> int:
    """The final norm's input (act bytes) and the logits in fp32 (the loss is computed in float32)."""
    return act * s * b * a.hidden + 4 * s * b * a.vocab


def training_activation_bytes(a: LLMArch, s: int, b: int, checkpointed: bool) -> int:
    """All layers' activations; with activation checkpointing (every layer) only each layer's input is kept,
    plus one layer recomputed at a time."""
    if checkpointed:
        kept = a.n_layers * 2 * s * b * a.hidden + layer_activation_bytes(a, s, b)
    else:
        kept = a.n_layers * layer_activation_bytes(a, s, b)
    return kept + head_activation_bytes(a, s, b)


def inference_activation_bytes(a: LLMArch, s: int, b: int, act: int) -> int:
    """Peak activations of a prefill of s tokens (nothing kept for a backward): the residual stream and its
    normed copy (2h per token), plus the larger of one layer's attention scores (heads·s², eager attention
    only) and its MLP hidden tensors (2·I gated, I otherwise), plus the last position's logits in fp32."""
    mlp = (2 if a.mlp_matrices >= 3 else 1) * a.intermediate * s
    scores = a.n_heads * s * s if a.eager_attention else 0
    return act * b * (2 * s * a.hidden + max(scores, mlp)) + 4 * b * a.vocab


def lora_params(a: LLMArch, rank: int) -> int:
    """LoRA of rank r on q, k, v and o in every layer: r·(in + out) per projection."""
    q = a.hidden + a.n_heads * a.head_dim
    kv = a.hidden + a.n_kv_heads * a.head_dim
    o = a.n_heads * a.head_dim + a.hidden
    return a.n_layers * rank * (q + 2 * kv + o)


def model_states(params: int, gpus: int, strategy: str, per: dict[str, int] = MIXED_ADAMW) -> dict[str, int]:
    """Bytes of weights, gradients and optimizer states on one GPU (ZeRO paper): DDP shards nothing; ZeRO-1 shards
    the optimizer states; ZeRO-2 also the gradients; ZeRO-3 (FSDP full sharding) also the weights. Shards round up."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    level = STRATEGIES.index(strategy)

    def share(n: int, sharded: bool) -> int:
        return -(-n // gpus) if sharded else n

    return {"params": share(per["params"] * params, level >= 3),
            "gradients": share(per["gradients"] * params, level >= 2),
            "optimizer": share(per["optimizer"] * params, level >= 1)}


def _training(states: dict[str, int], act: int, act_ckpt: int, extra: int = 0) -> dict[str, int]:
    base = sum(states.values()) + extra
    return {**states, "frozen_weights": extra, "activations": act, "activations_checkpointed": act_ckpt,
            "total": base + act, "total_checkpointed": base + act_ckpt}


def build_plan(a: LLMArch, opts: PlanOptions, context: int, batch: int) -> LLMPlan:
    """The plan at `context` tokens and batch `batch` (both ≥ 1)."""
    kv_dtype = dtype_name(opts.kv_dtype) or dtype_name(a.weight_dtype) or "bfloat16"
    act = DTYPE_BYTES.get(dtype_name(a.weight_dtype) or "", 2)
    kv_tok = 2 * a.n_layers * a.n_kv_heads * a.head_dim * DTYPE_BYTES[kv_dtype]
    kv = kv_tok * context * batch
    lin = linear_macs_per_token(a)
    prefill = 2 * (context * lin + attention_macs(a, context, context))
    decode = 2 * (lin + attention_macs(a, 1, context))
    act_inf = inference_activation_bytes(a, context, batch, act)
    act_tr = training_activation_bytes(a, context, batch, False)
    act_ck = training_activation_bytes(a, context, batch, True)
    full = _training(model_states(a.params_total, 1, "ddp"), act_tr, act_ck)
    n_lora = lora_params(a, opts.lora_rank)
    lora = _training(model_states(n_lora, 1, "ddp"), act_tr, act_ck, extra=2 * a.params_total)
    per_gpu = _training(model_states(a.params_total, opts.gpus, opts.strategy), act_tr, act_ck)
    return LLMPlan(
        architecture={"n_layers": a.n_layers, "hidden": a.hidden, "n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads,
                      "head_dim": a.head_dim, "intermediate": a.intermediate, "vocab": a.vocab,
                      "tied_embeddings": a.tied_embeddings, "mlp_matrices": a.mlp_matrices},
        params_total=a.params_total, params_embedding=a.params_embedding,
        params_non_embedding=a.params_total - a.params_embedding, weight_dtype=a.weight_dtype,
        context=context, batch_size=batch, kv_dtype=kv_dtype,
        flops_per_token_prefill=prefill // context, prefill_flops=prefill * batch, flops_per_token_decode=decode,
        kv_cache_bytes_per_token=kv_tok, kv_cache_bytes=kv,
        inference={"weights": a.weight_bytes, "kv_cache": kv, "activations": act_inf,
                   "total": a.weight_bytes + kv + act_inf},
        lora_rank=opts.lora_rank, lora_trainable_params=n_lora,
        training={"full": full, "lora": lora}, gpus=opts.gpus, strategy=opts.strategy, per_gpu=per_gpu,
        conventions={"training_bytes_per_param": {**MIXED_ADAMW, "total": sum(MIXED_ADAMW.values())},
                     "lora_frozen_bytes_per_param": 2, "activation_bytes": 2,
                     "attention": "eager (scores stored)" if a.eager_attention else "fused (no scores stored)",
                     "logits": "float32", "per_gpu": "full fine-tuning; activations at batch_size on each GPU"},
    )
