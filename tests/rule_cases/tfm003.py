"""TFM003: 80-wide attention over 4 heads (20 per head, not a multiple of 8); the twin uses 2 heads of 40."""
from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, heads: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 16, 80) * 0.02)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(80), nn.LayerNorm(80), nn.LayerNorm(80)
        self.attn = nn.MultiheadAttention(80, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(80, 160), nn.GELU(), nn.Linear(160, 80))
        self.head = nn.Linear(80, 10)

    def forward(self, x):
        x = x + self.pos
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ff(self.ln2(x))
        return self.head(self.ln3(x).mean(1))


def bad() -> dict:
    return dict(model=Block(heads=4), input_shape=[1, 16, 80], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Block(heads=2), input_shape=[1, 16, 80], dtype="float32", loss=None)
