"""ARC007: 14 convs and no normalisation; the twin adds BatchNorm after each conv."""
from __future__ import annotations

from torch import nn


def _net(norm: bool) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(14):
        layers.append(nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(16))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def bad() -> dict:
    return dict(model=_net(norm=False), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_net(norm=True), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)
