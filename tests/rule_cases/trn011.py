"""TRN011: the planted fault "relu-head-regression" from tests/probe_cases.py; the twin is the healthy "mlp-regression"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("relu-head-regression").rule_case()


def good() -> dict:
    return by_name("mlp-regression").rule_case()
