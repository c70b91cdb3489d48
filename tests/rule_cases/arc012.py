"""ARC012: an MLP squeezed 512 -> 16 -> 512 (32x); the twin squeezes 4x."""
from __future__ import annotations

from torch import nn


def _mlp(mid: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, mid), nn.ReLU(),
                         nn.Linear(mid, 512), nn.ReLU(), nn.Linear(512, 10))


def bad() -> dict:
    return dict(model=_mlp(16), input_shape=[1, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(128), input_shape=[1, 64], dtype="float32", loss=None)
