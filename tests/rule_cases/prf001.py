"""PRF001: channels_last measured 1.4× faster with equal outputs; the twin's best change gained 1.02×."""
from __future__ import annotations

from tests.profile_cases import case, profile, whatif


def bad() -> dict:
    return case(profile(whatifs=[whatif(1.4)]))


def good() -> dict:
    return case(profile(whatifs=[whatif(1.02), whatif(1.5, rel=0.3)]))  # too small a gain; outputs changed
