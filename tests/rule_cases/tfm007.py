"""TFM007: MultiheadAttention (sequence-first by default) fed a (batch, tokens, dim) tensor; the twin sets batch_first."""
from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 16, 64) * 0.02)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(64), nn.LayerNorm(64), nn.LayerNorm(64)
        self.attn = nn.MultiheadAttention(64, 2, batch_first=batch_first)
        self.ff = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.head = nn.Linear(64, 10)

    def forward(self, x):  # x: (batch, tokens, dim)
        x = x + self.pos
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ff(self.ln2(x))
        return self.head(self.ln3(x).mean(1))


def bad() -> dict:
    return dict(model=Block(batch_first=False), input_shape=[1, 16, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Block(batch_first=True), input_shape=[1, 16, 64], dtype="float32", loss=None)
