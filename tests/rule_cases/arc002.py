"""ARC002: a conv with a bias straight into BatchNorm; the twin drops the bias."""
from __future__ import annotations

from torch import nn


def _net(bias: bool) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=bias), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def bad() -> dict:
    return dict(model=_net(bias=True), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_net(bias=False), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)
