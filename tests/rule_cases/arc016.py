"""ARC016: a segmentation net that downsamples 8x and upsamples back with no skips; the twin is a small U-Net."""
from __future__ import annotations

import torch
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Seg(nn.Module):
    def __init__(self, skips: bool) -> None:
        super().__init__()
        self.skips = skips
        self.e1, self.e2, self.e3 = _cbr(3, 16, 2), _cbr(16, 24, 2), _cbr(24, 32, 2)  # 64 -> 32 -> 16 -> 8
        self.mid = nn.Sequential(_cbr(32, 32), _cbr(32, 32))
        self.u3, self.u2, self.u1 = _up(32, 24), _up(24, 16), _up(16, 16)  # 8 -> 16 -> 32 -> 64
        k = 2 if skips else 1
        self.d3, self.d2 = _cbr(24 * k, 24), _cbr(16 * k, 16)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        f1 = self.e1(x)
        f2 = self.e2(f1)
        y = self.mid(self.e3(f2))
        y = self.u3(y)
        y = self.d3(torch.cat([y, f2], 1) if self.skips else y)
        y = self.u2(y)
        y = self.d2(torch.cat([y, f1], 1) if self.skips else y)
        return self.head(self.u1(y))


def bad() -> dict:
    return dict(model=Seg(skips=False), input_shape=[1, 3, 64, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Seg(skips=True), input_shape=[1, 3, 64, 64], dtype="float32", loss=None)
