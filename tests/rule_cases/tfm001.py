"""TFM001: eight post-LN encoder layers (norm_first=False); the twin normalises first and ends with a LayerNorm."""
from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, norm_first: bool) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 16, 64) * 0.02)
        layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, norm_first=norm_first)
        self.enc = nn.TransformerEncoder(layer, 8, norm=nn.LayerNorm(64) if norm_first else None,
                                         enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.enc(x + self.pos).mean(1))


def bad() -> dict:
    return dict(model=Encoder(norm_first=False), input_shape=[1, 16, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Encoder(norm_first=True), input_shape=[1, 16, 64], dtype="float32", loss=None)
