"""PRF003: batch 16 takes 4 ms where batch 1 takes 2 ms (8× the throughput); the twin scales linearly."""
from __future__ import annotations

from tests.profile_cases import case, profile, sweep


def bad() -> dict:
    return case(profile(latency=sweep(0.002, 0.004), best_batch_size=16))


def good() -> dict:
    return case(profile(latency=sweep(0.002, 0.030), best_batch_size=16))
