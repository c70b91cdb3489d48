"""TRF002: the classifier head is frozen while the rest trains; the twin freezes the first layer and trains the head."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(frozen: int) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    m[frozen].requires_grad_(False)
    return m


def bad() -> dict:
    return dict(model=_mlp(4), input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(0), input_shape=[4, 16], dtype="float32", loss=None)
