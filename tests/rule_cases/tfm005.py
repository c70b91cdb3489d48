"""TFM005: a pre-LN encoder whose stream reaches the head unnormalised; the twin adds the final LayerNorm."""
from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, final_norm: bool) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 16, 64) * 0.02)
        layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 4, norm=nn.LayerNorm(64) if final_norm else None,
                                         enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.enc(x + self.pos).mean(1))


def bad() -> dict:
    return dict(model=Encoder(final_norm=False), input_shape=[1, 16, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Encoder(final_norm=True), input_shape=[1, 16, 64], dtype="float32", loss=None)
