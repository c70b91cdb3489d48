"""EFF004: Conv+BatchNorm pairs left unfused (`efficiency.fuse-min-macs` lowered to keep the case small);
the twin is the same network with each BatchNorm folded into its convolution."""
from __future__ import annotations

import torch
from torch import nn

CONFIG = {"efficiency": {"fuse_min_macs": 1000}}


def _head() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]


def bad() -> dict:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), *_head())
    return dict(model=m, input_shape=[2, 3, 8, 8], dtype="float32", loss=None, config=CONFIG)


def good() -> dict:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), *_head())
    return dict(model=m, input_shape=[2, 3, 8, 8], dtype="float32", loss=None, config=CONFIG)
