"""The memory plan of a decoder (causal LM): plain data, no torch. `collect/llm_plan.py` fills it;
docs/report-schema.md (`llm_plan`) documents every field and the conventions behind the figures."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("ddp", "zero1", "zero2", "zero3")


@dataclass
class PlanOptions:
    """What the plan is asked for (`inspect --context --gpus --strategy --lora-rank --kv-dtype`).
    None: the default (context and batch from the example input, kv dtype the model's)."""
    context: int | None = None
    batch_size: int | None = None
    gpus: int = 1
    strategy: str = "ddp"
    lora_rank: int = 16
    kv_dtype: str | None = None


@dataclass
class LLMPlan:
    status: str = "complete"
    reason: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)  # n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate, vocab, tied_embeddings, mlp_matrices
    params_total: int = 0
    params_embedding: int = 0
    params_non_embedding: int = 0
    weight_dtype: str = "float32"
    context: int = 0
    batch_size: int = 1
    kv_dtype: str = "bfloat16"
    flops_per_token_prefill: int = 0
    prefill_flops: int = 0
    flops_per_token_decode: int = 0
    kv_cache_bytes_per_token: int = 0
    kv_cache_bytes: int = 0
    inference: dict[str, int] = field(default_factory=dict)  # weights, kv_cache, activations, total
    lora_rank: int = 16
    lora_trainable_params: int = 0
    training: dict[str, dict[str, int]] = field(default_factory=dict)  # full / lora: params, gradients, optimizer, activations, activations_checkpointed, total, total_checkpointed
    gpus: int = 1
    strategy: str = "ddp"
    per_gpu: dict[str, int] = field(default_factory=dict)  # full fine-tuning on each GPU, same keys as training
    conventions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LLMPlan | None:
        if d is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
