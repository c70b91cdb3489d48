"""PRF002: timings that spread 30% around their mean; the twin's spread 2%."""
from __future__ import annotations

from tests.profile_cases import case, latency, profile


def bad() -> dict:
    return case(profile(latency=[latency(1, 0.002, cv=0.3)]))


def good() -> dict:
    return case(profile(latency=[latency(1, 0.002, cv=0.02)]))
