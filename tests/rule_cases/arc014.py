"""ARC014: dense 3×3 convs on 64-128 channels carry the compute; the twin makes them depthwise-separable."""
from __future__ import annotations

from torch import nn


def _cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _head() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]


def bad() -> dict:
    model = nn.Sequential(*_cbr(3, 64), *_cbr(64, 128), *_cbr(128, 128), *_head())
    return dict(model=model, input_shape=[1, 3, 8, 8], dtype="float32", loss=None)


def good() -> dict:
    model = nn.Sequential(*_cbr(3, 64),
                          *_cbr(64, 64, groups=64), *_cbr(64, 128, k=1),
                          *_cbr(128, 128, groups=128), *_cbr(128, 128, k=1), *_head())
    return dict(model=model, input_shape=[1, 3, 8, 8], dtype="float32", loss=None)
