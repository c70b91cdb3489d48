"""TRN013: the planted fault "transpose-mixes-batch" from tests/probe_cases.py; the twin is the healthy "mlp"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("transpose-mixes-batch").rule_case()


def good() -> dict:
    return by_name("mlp").rule_case()
