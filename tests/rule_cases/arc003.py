"""ARC003: BatchNorm after the ReLU; the twin normalises before the activation."""
from __future__ import annotations

from torch import nn


def _block(cin: int, cout: int, norm_first: bool) -> list[nn.Module]:
    if norm_first:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout)]


def _net(norm_first: bool) -> nn.Module:
    return nn.Sequential(
        *_block(3, 16, norm_first), nn.MaxPool2d(2),
        *_block(16, 32, norm_first), nn.MaxPool2d(2),
        *_block(32, 32, norm_first),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def bad() -> dict:
    return dict(model=_net(norm_first=False), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_net(norm_first=True), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)
