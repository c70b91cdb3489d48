"""TRN008: the planted fault "head-init-std-5" from tests/probe_cases.py; the twin is the healthy "mlp"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("head-init-std-5").rule_case()


def good() -> dict:
    return by_name("mlp").rule_case()
