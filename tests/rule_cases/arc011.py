"""ARC011 (batch 2, so BatchNorm accepts the 1×1 map in training): three stride-2 stages take an 8×8 input to 1×1, then a 3×3 conv runs on it; the twin feeds 32×32."""
from __future__ import annotations

from torch import nn


def _net() -> nn.Module:
    layers: list[nn.Module] = []
    for cin, cout, stride in ((3, 16, 2), (16, 32, 2), (32, 32, 2), (32, 32, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def bad() -> dict:
    return dict(model=_net(), input_shape=[2, 3, 8, 8], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_net(), input_shape=[2, 3, 32, 32], dtype="float32", loss=None)
