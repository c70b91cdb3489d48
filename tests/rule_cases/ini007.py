"""INI007: a hidden layer initialised with std 2.0 at fan-in 64 (16x the 1/sqrt(fan_in) scale); the twin uses He."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(init) -> nn.Sequential:  # noqa: ANN001
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    init(m[2].weight)
    return m


def bad() -> dict:
    return dict(model=_mlp(lambda w: nn.init.normal_(w, std=2.0)), input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")), input_shape=[4, 16],
                dtype="float32", loss=None)
