"""PRF004: 60% of the time in a memory-bound layer; in the twin that layer is compute-bound."""
from __future__ import annotations

from tests.profile_cases import case, modules, profile


def bad() -> dict:
    return case(profile(modules=modules("memory")))


def good() -> dict:
    return case(profile(modules=modules("compute")))
