"""ARC010: two 3×3 convs (a 5×5 field) on 64×64 images; the twin downsamples until the field covers the input."""
from __future__ import annotations

from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _head() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)]


def bad() -> dict:
    model = nn.Sequential(*_cbr(3, 32), *_cbr(32, 32), *_head())
    return dict(model=model, input_shape=[1, 3, 64, 64], dtype="float32", loss=None)


def good() -> dict:
    # fields 3, 7, 15, 31, 47: past half the 64-pixel input
    model = nn.Sequential(*_cbr(3, 16, 2), *_cbr(16, 32, 2), *_cbr(32, 32, 2), *_cbr(32, 32, 2),
                          *_cbr(32, 32), *_head())
    return dict(model=model, input_shape=[1, 3, 64, 64], dtype="float32", loss=None)
