"""OUT008: a softmax over dimension 0 (the batch) at the output; the twin normalises over the classes."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(dim: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(dim=dim))


def bad() -> dict:
    return dict(model=_mlp(0), input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(1), input_shape=[4, 16], dtype="float32", loss=None)
