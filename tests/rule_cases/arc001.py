"""ARC001: a 7×7 conv past the stem; the twin reaches the same 7×7 field with three 3×3 convs."""
from __future__ import annotations

from torch import nn


def _cbr(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _head() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)]


def bad() -> dict:
    # 32*32*49 = 50,176 weights in the 7x7 conv; three 3x3 convs need 27,648
    model = nn.Sequential(*_cbr(3, 32, 3), *_cbr(32, 32, 7), *_head())
    return dict(model=model, input_shape=[1, 3, 16, 16], dtype="float32", loss=None)


def good() -> dict:
    model = nn.Sequential(*_cbr(3, 32, 3), *_cbr(32, 32, 3), *_cbr(32, 32, 3), *_cbr(32, 32, 3), *_head())
    return dict(model=model, input_shape=[1, 3, 16, 16], dtype="float32", loss=None)
