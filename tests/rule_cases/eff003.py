"""EFF003: an fp32 model above `efficiency.half-min-params` (lowered here to keep the case small);
the twin is the same model stored in bfloat16."""
from __future__ import annotations

import torch
from torch import nn

CONFIG = {"efficiency": {"half_min_params": 1000}}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))


def bad() -> dict:
    return dict(model=_mlp(), input_shape=[4, 16], dtype="float32", loss=None, config=CONFIG)


def good() -> dict:
    return dict(model=_mlp().to(torch.bfloat16), input_shape=[4, 16], dtype="bfloat16", loss=None, config=CONFIG)
