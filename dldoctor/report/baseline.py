"""The stable identity of a finding: what a baseline entry and a SARIF fingerprint are made of.

An entry names the model twice, by file hash and by path (relative to the baseline's folder),
plus the code, the location and a hash of the message with its numbers blanked out, so the
identity survives re-measurement. `dldoctor/api/baseline.py` reads and writes baseline files
from these; `dldoctor/render/sarif.py` gives each result its `fingerprint`.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from dldoctor.report.types import Finding, Report

_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def message_hash(message: str) -> str:
    """Stable across re-measurement: every number becomes '#', whitespace is collapsed."""
    text = " ".join(_NUMBER.sub("#", message).split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_key(path: str, base_dir: str | os.PathLike[str]) -> str:
    """A file's path relative to the baseline's folder (posix); a factory spec as given."""
    if not os.path.exists(path):
        return path
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))
    return Path(rel).as_posix()


def entry(report: Report, f: Finding, base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    e = {
        "path": model_key(report.model.path, base_dir),
        "sha256": report.model.sha256,
        "code": f.code,
        "location": f.location,
        "message_hash": message_hash(f.message),
    }
    e["fingerprint"] = fingerprint(e)
    return e


def fingerprint(e: dict[str, Any]) -> str:
    ident = e.get("sha256") or e.get("path") or ""
    raw = "\x1f".join([ident, e["code"], e.get("location") or "", e["message_hash"]])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
