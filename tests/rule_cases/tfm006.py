"""TFM006: attention blocks with residuals and no LayerNorm anywhere; the twin is pre-LN."""
from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(64) if norm else nn.Identity()
        self.ln2 = nn.LayerNorm(64) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(64, 2, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.ln2(x))


class Net(nn.Module):
    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 16, 64) * 0.02)
        self.blocks = nn.Sequential(Block(norm), Block(norm))
        self.norm = nn.LayerNorm(64) if norm else nn.Identity()
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.norm(self.blocks(x + self.pos)).mean(1))


def bad() -> dict:
    return dict(model=Net(norm=False), input_shape=[1, 16, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Net(norm=True), input_shape=[1, 16, 64], dtype="float32", loss=None)
