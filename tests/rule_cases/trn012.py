"""TRN012: the planted fault "softmax-into-cross-entropy" from tests/probe_cases.py; the twin is the healthy "log-softmax-into-cross-entropy"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("softmax-into-cross-entropy").rule_case()


def good() -> dict:
    return by_name("log-softmax-into-cross-entropy").rule_case()
