"""ARC013: a 7-layer MLP with tanh hidden activations; the twin uses ReLU."""
from __future__ import annotations

from torch import nn


def _mlp(act: type[nn.Module]) -> nn.Module:
    return nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(64, 64), act())], nn.Linear(64, 10))


def bad() -> dict:
    return dict(model=_mlp(nn.Tanh), input_shape=[1, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(nn.ReLU), input_shape=[1, 64], dtype="float32", loss=None)
