"""OUT006: a softmax over a one-unit head (always 1.0); the twin uses a sigmoid on the single unit."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(*tail: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1), *tail)


def bad() -> dict:
    return dict(model=_mlp(nn.Softmax(dim=1)), input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(nn.Sigmoid()), input_shape=[4, 16], dtype="float32", loss=None)
