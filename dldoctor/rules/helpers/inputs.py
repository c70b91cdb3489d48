"""The example input a finding was computed at: a finding whose numbers depend on the input size says so when
that size was guessed (`inputs[].assumed`: from the first layer, or a folder's config.json), not given."""
from __future__ import annotations

from dldoctor.report.facts import Facts

ASSUMED_NOTE = " (input assumed: pass --input-shape)"


def assumed_note(facts: Facts) -> str:
    """ASSUMED_NOTE when an input of the report was assumed, else "": the tail of an input-size-dependent message."""
    rep = getattr(facts, "report", None)
    inputs = getattr(rep, "inputs", None) or []
    return ASSUMED_NOTE if any(getattr(i, "assumed", False) for i in inputs) else ""
