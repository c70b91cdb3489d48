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


def render_check_json(reports: list[Report], summary: dict[str, int], failures: list[str], single: bool = False) -> str:
    """`dldoctor check -f json`: always one envelope, `{schema_version, summary, reports, errors}`, for one model as
    for many (`single` is accepted and ignored: schema 2.0 dropped the bare report of a one-model check)."""
    doc = {"schema_version": SCHEMA_VERSION, "summary": summary, "reports": [r.to_dict() for r in reports],
           "errors": failures}
    return render_json_doc(doc)


def statistics(reports: list[Report]) -> list[dict[str, Any]]:
    """`check --statistics`: one row per rule code (code, name, severity, count), most frequent first."""
    rows: dict[str, dict[str, Any]] = {}
    for r in reports:
        for f in r.findings:
            row = rows.setdefault(f.code, {"code": f.code, "name": f.name, "severity": f.severity, "count": 0})
            row["count"] += 1
    return sorted(rows.values(), key=lambda x: (-x["count"], x["code"]))
