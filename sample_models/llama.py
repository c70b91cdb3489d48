"""A Llama-style decoder in plain torch (RMSNorm, grouped-query attention via SDPA, SwiGLU).

Used to show that `dldoctor inspect --device meta` handles models far larger than memory:
`dldoctor inspect "sample_models.llama:llama(size='70b')" --device meta -s 1,128 --dtype int64`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONFIGS = {
    # name: (layers, d_model, heads, kv_heads, ffn, vocab)
    "tiny": (2, 64, 4, 2, 172, 1000),
    "7b": (32, 4096, 32, 32, 11008, 32000),
    "70b": (80, 8192, 64, 8, 28672, 128256),
}


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.wq = nn.Linear(d, heads * self.hd, bias=False)
        self.wk = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(heads * self.hd, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.wk(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.wv(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, d: int, ffn: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d, ffn, bias=False)
        self.w3 = nn.Linear(d, ffn, bias=False)
        self.w2 = nn.Linear(ffn, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int, ffn: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(d)
        self.attn = Attention(d, heads, kv_heads)
        self.mlp_norm = RMSNorm(d)
        self.mlp = MLP(d, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, layers: int, d: int, heads: int, kv_heads: int, ffn: int, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.lm_head(self.norm(x))


def llama(size: str = "tiny", layers: int | None = None) -> Llama:
    n, d, h, kv, ffn, vocab = CONFIGS[size]
    return Llama(layers if layers is not None else n, d, h, kv, ffn, vocab)


def analytic(size: str = "tiny", tokens: int = 128, layers: int | None = None) -> tuple[int, int]:
    """(parameters, forward MACs at batch 1) derived by hand from the config."""
    n, d, h, kv, ffn, vocab = CONFIGS[size]
    n = layers if layers is not None else n
    hd = d // h
    per_layer_linear = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * ffn
    params = vocab * d + n * (per_layer_linear + 2 * d) + d + d * vocab
    # every linear weight is used once per token; attention: Q.K^T and attn.V, T*T*hd per head each
    # (SDPA is counted without the causal mask's savings, like torch's own formula)
    macs = tokens * (n * per_layer_linear + d * vocab) + n * 2 * h * tokens * tokens * hd
    return params, macs


def write_sparse_safetensors(path: str, size: str = "7b", dtype: str = "BF16") -> int:
    """A safetensors file with this model's tensor names and shapes whose data section is a hole (all zeros,
    no disk used): a stand-in for a real checkpoint when what is tested is reading it without loading it.
    Returns the data size in bytes."""
    import json
    import struct

    width = {"F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1}[dtype]
    with torch.device("meta"):
        sd = llama(size).state_dict()
    header, off = {}, 0
    for k, t in sd.items():
        header[k] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + width * t.numel()]}
        off += width * t.numel()
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + off)
    return off
