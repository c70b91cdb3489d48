"""TRF004: linear layers frozen but their BatchNorm layers still train; the twin freezes the BatchNorms too."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.Linear(64, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


def bad() -> dict:
    m = _mlp()
    m[0].requires_grad_(False)
    m[3].requires_grad_(False)
    return dict(model=m, input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    m = _mlp()
    m[:6].requires_grad_(False)
    return dict(model=m, input_shape=[4, 16], dtype="float32", loss=None)
