"""OUT003: BCELoss on raw scores; the twin ends with a sigmoid."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(*tail: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1), *tail)


def bad() -> dict:
    return dict(model=_mlp(), input_shape=[4, 16], dtype="float32", loss="bce")


def good() -> dict:
    return dict(model=_mlp(nn.Sigmoid()), input_shape=[4, 16], dtype="float32", loss="bce")
