"""ARC005: element-wise Dropout between two conv blocks; the twin drops whole channels (Dropout2d)."""
from __future__ import annotations

from torch import nn


def _net(drop: nn.Module) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        drop,
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, 10),
    )


def bad() -> dict:
    return dict(model=_net(nn.Dropout(0.3)), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_net(nn.Dropout2d(0.1)), input_shape=[1, 3, 16, 16], dtype="float32", loss=None)
