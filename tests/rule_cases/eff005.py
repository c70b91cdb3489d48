"""EFF005: a model converted to float64 with .double(); the twin stays float32."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))


def bad() -> dict:
    return dict(model=_mlp().double(), input_shape=[4, 16], dtype="float64", loss=None)


def good() -> dict:
    return dict(model=_mlp(), input_shape=[4, 16], dtype="float32", loss=None)
