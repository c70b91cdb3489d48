"""BUD001: 808 parameters against a budget of 500; the same model under a budget it fits."""
from __future__ import annotations

from torch import nn


def _mlp() -> nn.Module:
    # 16*32+32 + 32*8+8 = 808 parameters, 512+256 = 768 MACs on a 1x16 input, 3,232 bytes in fp32
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def bad() -> dict:
    return dict(model=_mlp(), input_shape=[1, 16], dtype="float32", loss=None, config={"budget": {"max_params": 500}})


def good() -> dict:
    return dict(model=_mlp(), input_shape=[1, 16], dtype="float32", loss=None, config={"budget": {"max_params": 1000}})
