"""JSON output: the documented contract (docs/report-schema.md)."""
from __future__ import annotations

import json
import math
from typing import Any

from dldoctor.report.types import SCHEMA_VERSION, Report


def clean(x: Any) -> Any:
    # JSON has no NaN/Infinity; say "unavailable" with null rather than emit invalid JSON.
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def render_json_doc(doc: Any) -> str:
    """Any JSON document, with non-finite floats made null."""
    return json.dumps(clean(doc), indent=2, sort_keys=False) + "\n"


def render_json(reports: list[Report], single: bool = True) -> str:
    if single and len(reports) == 1:
        doc: Any = reports[0].to_dict()
    else:
        doc = {"schema_version": SCHEMA_VERSION, "reports": [r.to_dict() for r in reports]}
    return json.dumps(clean(doc), indent=2, sort_keys=False) + "\n"


def render_check_json(reports: list[Report], summary: dict[str, int], failures: list[str], single: bool = True) -> str:
    """`dldoctor check -f json`: one report with the run's summary, or every report, the summary and the errors."""
    if single and len(reports) == 1:
        doc: dict[str, Any] = {**reports[0].to_dict(), "summary": summary}
    else:
        doc = {"schema_version": SCHEMA_VERSION, "summary": summary, "reports": [r.to_dict() for r in reports],
               "errors": failures}
    return render_json_doc(doc)
