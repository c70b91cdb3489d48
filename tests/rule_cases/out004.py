"""OUT004: NLLLoss on raw logits; the twin ends with LogSoftmax."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(*tail: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10), *tail)


def bad() -> dict:
    return dict(model=_mlp(), input_shape=[4, 16], dtype="float32", loss="nll")


def good() -> dict:
    return dict(model=_mlp(nn.LogSoftmax(dim=1)), input_shape=[4, 16], dtype="float32", loss="nll")
