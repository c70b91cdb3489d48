"""INI006: two hidden layers feeding ReLU with Xavier-normal weights; the twin uses He (kaiming_normal_)."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(init) -> nn.Sequential:  # noqa: ANN001
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                      nn.Linear(64, 10))
    for i in (2, 4):
        init(m[i].weight)
    return m


def bad() -> dict:
    return dict(model=_mlp(nn.init.xavier_normal_), input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")), input_shape=[4, 16],
                dtype="float32", loss=None)
