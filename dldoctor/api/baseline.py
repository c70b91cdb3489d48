"""Baselines: adopt dldoctor on an existing model zoo and fail only on new findings.

An entry names the model twice, by file hash and by path (relative to the baseline
file), plus the code, the location and a hash of the message with its numbers blanked
out: the identity of a finding, in dldoctor/report/baseline.py. A finding is old when
an entry matches its code, location and message hash, and either its file hash (the
file moved) or its path (the model was retrained). Entries are sorted and carry no
timestamp, so the file diffs cleanly in review.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from dldoctor.errors import ConfigError
from dldoctor.report.baseline import entry, fingerprint, message_hash, model_key  # noqa: F401 - re-exported
from dldoctor.report.types import Finding, Report

BASELINE_VERSION = "1"


def render_baseline(reports: Iterable[Report], base_dir: str | os.PathLike[str]) -> str:
    from dldoctor._version import __version__

    entries = [entry(r, f, base_dir) for r in reports for f in r.findings]
    entries.sort(key=lambda e: (e["path"], e["code"], e["location"] or "", e["message_hash"]))
    doc = {"baseline_version": BASELINE_VERSION, "tool": "dldoctor", "tool_version": __version__, "findings": entries}
    return json.dumps(doc, indent=2) + "\n"


class Baseline:
    def __init__(self, entries: list[dict[str, Any]], base_dir: str | os.PathLike[str]) -> None:
        self.base_dir = base_dir
        self._keys: set[tuple[str, str, str, str]] = set()
        for e in entries:
            rest = (e["code"], e.get("location") or "", e["message_hash"])
            if e.get("sha256"):
                self._keys.add(("sha", e["sha256"], *rest))  # type: ignore[arg-type]
            if e.get("path"):
                self._keys.add(("path", e["path"], *rest))  # type: ignore[arg-type]

    def __contains__(self, item: tuple[Report, Finding]) -> bool:
        report, f = item
        rest = (f.code, f.location or "", message_hash(f.message))
        if report.model.sha256 and ("sha", report.model.sha256, *rest) in self._keys:
            return True
        return ("path", model_key(report.model.path, self.base_dir), *rest) in self._keys

    def filter(self, report: Report) -> int:
        """Drop the report's findings that the baseline knows; return how many were dropped."""
        keep = [f for f in report.findings if (report, f) not in self]
        dropped = len(report.findings) - len(keep)
        report.findings = keep
        return dropped


def load_baseline(path: str | os.PathLike[str]) -> Baseline:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        entries = doc["findings"]
        for e in entries:
            if not isinstance(e, dict) or "code" not in e or "message_hash" not in e:
                raise ValueError("an entry lacks code or message_hash")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the baseline ({e.strerror or e})", "write one with --write-baseline FILE") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{p}: not a dldoctor baseline ({e})", "write one with --write-baseline FILE") from None
    return Baseline(entries, p.resolve().parent)
