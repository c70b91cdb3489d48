"""TRF005: 95% of the parameters frozen although the dataset has a million samples; the twin fine-tunes everything."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def bad() -> dict:
    m = _mlp()
    m[:4].requires_grad_(False)
    return dict(model=m, input_shape=[4, 64], dtype="float32", loss=None, dataset_size=1_000_000)


def good() -> dict:
    return dict(model=_mlp(), input_shape=[4, 64], dtype="float32", loss=None, dataset_size=1_000_000)
