"""INI003: one weight of magnitude 5000 (an exploding-gradient step); the twin's weights are ordinary."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))


def bad() -> dict:
    m = _mlp()
    with torch.no_grad():
        m[0].weight[3, 7] = 5000.0
    return dict(model=m, input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(), input_shape=[4, 16], dtype="float32", loss=None)
