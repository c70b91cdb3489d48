"""TRF003: 17k trainable parameters fine-tuned end to end on 100 samples; the twin trains only the head."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def bad() -> dict:
    return dict(model=_mlp(), input_shape=[4, 64], dtype="float32", loss=None, dataset_size=100)


def good() -> dict:
    m = _mlp()
    m[:4].requires_grad_(False)  # feature extraction: only the head trains
    return dict(model=m, input_shape=[4, 64], dtype="float32", loss=None, dataset_size=100)
