"""TFM004: token embeddings go straight into the encoder; the twin adds a learned position embedding."""
from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, positions: bool) -> None:
        super().__init__()
        self.tok = nn.Embedding(1000, 64)
        self.pos = nn.Parameter(torch.randn(1, 32, 64) * 0.02) if positions else None
        layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(64), enable_nested_tensor=False)
        self.head = nn.Linear(64, 8)

    def forward(self, ids):
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos[:, : ids.shape[1]]
        return self.head(self.enc(x).mean(1))


def bad() -> dict:
    return dict(model=Encoder(positions=False), input_shape=[1, 16], dtype="int64", loss=None)


def good() -> dict:
    return dict(model=Encoder(positions=True), input_shape=[1, 16], dtype="int64", loss=None)
