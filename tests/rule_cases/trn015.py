"""TRN015: the planted fault "reads-2-of-100-features" from tests/probe_cases.py; the twin is the healthy "mlp-100-features"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("reads-2-of-100-features").rule_case()


def good() -> dict:
    return by_name("mlp-100-features").rule_case()
