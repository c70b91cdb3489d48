"""ARC009: ReLU applied twice; the twin applies it once."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, twice: bool) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)
        self.twice = twice

    def forward(self, x):
        h = self.act(self.fc1(x))
        if self.twice:
            h = F.relu(h)  # the block already ended in a ReLU
        return self.fc2(h)


def bad() -> dict:
    return dict(model=Net(twice=True), input_shape=[1, 64], dtype="float32", loss=None)


def good() -> dict:
    return dict(model=Net(twice=False), input_shape=[1, 64], dtype="float32", loss=None)
