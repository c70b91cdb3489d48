"""INI004: 8 of 32 units of a layer with all-zero weights (zeroed, not removed); the twin is 24 units wide."""
from __future__ import annotations

import torch
from torch import nn


def bad() -> dict:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        m[0].weight[:8] = 0.0
    return dict(model=m, input_shape=[4, 16], dtype="float32", loss=None)


def good() -> dict:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 10))
    return dict(model=m, input_shape=[4, 16], dtype="float32", loss=None)
