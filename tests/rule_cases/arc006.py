"""ARC006: 24 Linear layers in a plain stack; the twin wraps them in residual blocks."""
from __future__ import annotations

from torch import nn


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU())

    def forward(self, x):
        return x + self.f(x)


def bad() -> dict:
    layers = [m for _ in range(24) for m in (nn.Linear(32, 32), nn.LayerNorm(32), nn.ReLU())]
    return dict(model=nn.Sequential(*layers, nn.Linear(32, 10)), input_shape=[1, 32], dtype="float32", loss=None)


def good() -> dict:
    model = nn.Sequential(*[Residual(32) for _ in range(24)], nn.LayerNorm(32), nn.Linear(32, 10))
    return dict(model=model, input_shape=[1, 32], dtype="float32", loss=None)
