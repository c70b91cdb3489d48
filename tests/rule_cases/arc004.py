"""ARC004: Dropout(0.8) in an MLP; the twin drops 30 %."""
from __future__ import annotations

from torch import nn


def _mlp(p: float) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(p), nn.Linear(128, 10))


def bad() -> dict:
    return dict(model=_mlp(0.8), input_shape=[1, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(0.3), input_shape=[1, 64], dtype="float32", loss=None)
