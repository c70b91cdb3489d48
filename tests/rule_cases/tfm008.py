"""TFM008: full attention over 8,192 tokens; the twin attends within windows of 256."""
from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, window: int | None) -> None:
        super().__init__()
        self.window = window
        self.pos = nn.Parameter(torch.randn(1, 8192, 32) * 0.02)
        self.ln1, self.ln2 = nn.LayerNorm(32), nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 1, batch_first=True)
        self.head = nn.Linear(32, 8)

    def forward(self, x):  # x: (batch, 8192 tokens, 32)
        x = x + self.pos
        h = self.ln1(x)
        if self.window:
            b, t, d = h.shape
            w = h.reshape(b * t // self.window, self.window, d)
            h = self.attn(w, w, w, need_weights=False)[0].reshape(b, t, d)
        else:
            h = self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.ln2(x + h).mean(1))


def bad() -> dict:
    return dict(model=Block(window=None), input_shape=[1, 8192, 32], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Block(window=256), input_shape=[1, 8192, 32], dtype="float32", loss=None)
