"""TRN014: the planted fault "raw-pixels-0-255" from tests/probe_cases.py; the twin is the healthy "cnn-normalized-batches"."""
from __future__ import annotations

from tests.probe_cases import by_name


def bad() -> dict:
    return by_name("raw-pixels-0-255").rule_case()


def good() -> dict:
    return by_name("cnn-normalized-batches").rule_case()
