"""BUD010: p50 8 ms at batch 1 on CPU against a 5 ms budget; the twin measures 3 ms."""
from __future__ import annotations

from tests.profile_cases import case, latency, profile

BUDGET = {"budget": {"max_latency_ms": 5.0}}


def bad() -> dict:
    return case(profile(latency=[latency(1, 0.008)]), BUDGET)


def good() -> dict:
    return case(profile(latency=[latency(1, 0.003)]), BUDGET)
