"""EFF002: an MLP magnitude-pruned to 80% zeros but stored dense; the twin is the unpruned model."""
from __future__ import annotations

import torch
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))


def bad() -> dict:
    m = _mlp()
    with torch.no_grad():
        for lin in (m[0], m[2], m[4]):
            w = lin.weight
            cut = w.abs().flatten().kthvalue(int(0.8 * w.numel())).values
            w[w.abs() <= cut] = 0.0  # what prune.l1_unstructured(amount=0.8) + prune.remove leaves
    return dict(model=m, input_shape=[4, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=_mlp(), input_shape=[4, 64], dtype="float32", loss=None)
