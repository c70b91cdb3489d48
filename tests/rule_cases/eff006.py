"""EFF006: a text classifier whose parameters are almost all one embedding table (`efficiency.embedding-min-params`
lowered to keep the case small); the twin has a vocabulary small enough that the layers dominate."""
from __future__ import annotations

import torch
from torch import nn

CONFIG = {"efficiency": {"embedding_min_params": 1000}}


def _model(vocab: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(vocab, 32), nn.Flatten(), nn.Linear(8 * 32, 64), nn.ReLU(), nn.Linear(64, 2))


def bad() -> dict:
    return dict(model=_model(4000), input_shape=[2, 8], dtype="int64", loss=None, config=CONFIG)


def good() -> dict:
    return dict(model=_model(100), input_shape=[2, 8], dtype="int64", loss=None, config=CONFIG)
