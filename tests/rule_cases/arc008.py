"""ARC008: two Linear layers back to back; the twin puts a ReLU between them."""
from __future__ import annotations

from torch import nn


def bad() -> dict:
    model = nn.Sequential(nn.Linear(64, 128), nn.Dropout(0.2), nn.Linear(128, 10))
    return dict(model=model, input_shape=[1, 64], dtype="float32", loss=None)


def good() -> dict:
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    return dict(model=model, input_shape=[1, 64], dtype="float32", loss=None)
