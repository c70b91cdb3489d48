"""BUD009: doubling the hidden width against a saved baseline (both memory peaks grow with the hidden width); an unchanged model passes."""
from __future__ import annotations

from torch import nn

import dldoctor


def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 8))


def _case(hidden: int) -> dict:
    # The baseline is the report of the accepted model (in CI: `dldoctor inspect -f json` on the main branch).
    baseline = dldoctor.inspect(_mlp(32), input_shapes=[[1, 16]])
    return dict(model=_mlp(hidden), input_shape=[1, 16], dtype="float32", loss=None, baseline=baseline,
                config={"budget": {"max_memory_growth": 0.05}})


def bad() -> dict:
    return _case(64)


def good() -> dict:
    return _case(32)
