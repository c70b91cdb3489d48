"""EFF001: a 5.3M-parameter fp32 MLP (all Linear) that dynamic int8 would shrink ~4x; the twin is below
`efficiency.quantize-min-params`, where the saving is not worth a finding."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1024, width), nn.ReLU(), nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 10))


def bad() -> dict:
    return dict(model=_mlp(4096), input_shape=[2, 1024], dtype="float32", loss=None)  # 5.25M params


def good() -> dict:
    return dict(model=_mlp(1024), input_shape=[2, 1024], dtype="float32", loss=None)  # 1.3M params
