"""TRN010: the planted fault "adam-lr-1e-8" from tests/probe_cases.py; the twin is the healthy "mlp"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("adam-lr-1e-8").rule_case()


def good() -> dict:
    return by_name("mlp").rule_case()
