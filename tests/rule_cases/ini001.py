"""INI001: a hidden layer initialised to zeros; the twin keeps PyTorch's random initialisation."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


def bad() -> dict:
    m = _mlp()
    with torch.no_grad():
        m[2].weight.zero_()
    return dict(model=m, input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(), input_shape=[4, 16], dtype="float32", loss=None)
