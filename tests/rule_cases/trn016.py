"""TRN016: the planted fault "reads-only-the-border" from tests/probe_cases.py; the twin is the healthy "conv-bn-relu-cnn"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("reads-only-the-border").rule_case()


def good() -> dict:
    return by_name("conv-bn-relu-cnn").rule_case()
