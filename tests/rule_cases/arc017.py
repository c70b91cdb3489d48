"""ARC017: a 3×3 conv without padding shrinks the map; the twin pads it."""
from __future__ import annotations

from torch import nn


def _net(pad: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=pad, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def bad() -> dict:
    return dict(model=_net(pad=0), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_net(pad=1), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)
