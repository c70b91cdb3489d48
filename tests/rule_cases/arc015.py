"""ARC015: a hidden layer 100 wide; the twin rounds it up to 104."""
from __future__ import annotations

from torch import nn


def bad() -> dict:
    model = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    return dict(model=model, input_shape=[1, 64], dtype="float32", loss=None)


def good() -> dict:
    model = nn.Sequential(nn.Linear(64, 104), nn.ReLU(), nn.Linear(104, 10))
    return dict(model=model, input_shape=[1, 64], dtype="float32", loss=None)
