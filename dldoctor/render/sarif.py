"""SARIF 2.1.0 for code-scanning dashboards (GitHub, Azure DevOps, VS Code's SARIF viewer).

The rule metadata comes from the registry (each rule's docstring is its help text);
a finding's module path is a logicalLocation and the model file its physicalLocation.
Models that failed to load become tool execution notifications.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from dldoctor.report.baseline import entry
from dldoctor.report.types import Report

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _artifact(path: str) -> dict[str, Any] | None:
    """A relative file path under the current folder (uriBaseId %SRCROOT%), or an absolute file URI."""
    if not os.path.exists(path):
        return None  # a factory spec: no file to point at
    absolute = Path(path).resolve()
    try:
        rel = absolute.relative_to(Path.cwd().resolve())
        return {"uri": quote(rel.as_posix(), errors="surrogateescape"), "uriBaseId": "%SRCROOT%"}  # any file name
    except ValueError:
        return {"uri": absolute.as_uri()}


def rule_descriptor(r: Any) -> dict[str, Any]:
    return {
        "id": r.code,
        "name": r.name,
        "shortDescription": {"text": r.summary},
        "fullDescription": {"text": r.sections.get("What it does", r.summary).strip()},
        "help": {"text": r.doc, "markdown": r.doc},
        "defaultConfiguration": {"level": LEVEL[r.severity.value]},
        "properties": {
            "tags": list(dict.fromkeys([r.family, *r.needs])),
            "family": r.family,
            "needs": list(r.needs),
            "sources": list(r.sources),
        },
    }


def render_sarif(reports: Iterable[Report], rules: list[Any], failures: Iterable[str] = ()) -> str:
    from dldoctor._version import __version__

    reports = list(reports)
    used = {f.code for r in reports for f in r.findings}
    known = {r.code for r in rules}
    descriptors = [rule_descriptor(r) for r in rules]
    index = {d["id"]: i for i, d in enumerate(descriptors)}
    for code in sorted(used - known):  # a finding from a rule no longer registered still needs an id
        index[code] = len(descriptors)
        descriptors.append({"id": code})
    results = []
    for rep in reports:
        art = _artifact(rep.model.path)
        for f in rep.findings:
            fp = entry(rep, f, Path.cwd())["fingerprint"]
            text = f.message + (f" Fix: {f.fix}" if f.fix else "")
            loc: dict[str, Any] = {}
            if art is not None:
                # GitHub code scanning places a result only with region.startLine; a model file has no
                # lines, so the whole finding sits on "line 1" and the module path says where it is.
                loc["physicalLocation"] = {"artifactLocation": dict(art), "region": {"startLine": 1}}
            logical = {"fullyQualifiedName": f.location or "<model>", "kind": "module"}
            if f.location:
                logical["name"] = f.location.rsplit(".", 1)[-1]
            loc["logicalLocations"] = [logical]
            if art is None:
                loc["message"] = {"text": rep.model.path}
            res: dict[str, Any] = {
                "ruleId": f.code,
                "ruleIndex": index[f.code],
                "level": LEVEL.get(f.severity, "warning"),
                "message": {"text": text},
                "locations": [loc],
                # Given here, so upload tools do not hash "source lines" of a binary file themselves.
                "partialFingerprints": {"dldoctorFinding/v1": fp, "primaryLocationLineHash": f"{fp}:1"},
                "properties": {"name": f.name, "model": rep.model.path, "evidence": f.evidence},
            }
            if f.transform:
                res["properties"]["transform"] = f.transform
            results.append(res)
    notes = [
        {"level": "error", "message": {"text": line}, "descriptor": {"id": "load-error"}}
        for line in failures
    ]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "dldoctor",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": descriptors,
            }
        },
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri().rstrip("/") + "/"}},
        "invocations": [{"executionSuccessful": not notes, "toolExecutionNotifications": notes}],
        "results": results,
        "columnKind": "unicodeCodePoints",
    }
    doc = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    from dldoctor.render.json import clean

    return json.dumps(clean(doc), indent=2) + "\n"
