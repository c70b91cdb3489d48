"""GitHub Actions workflow commands: one annotation per finding (`::error file=...,title=...::message`)."""
from __future__ import annotations

import os
from typing import Iterable

from dldoctor.errors import safe
from dldoctor.report.types import Report

COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _data(s: str) -> str:
    """A workflow-command message: control characters made visible first (`safe`: a name's ESC, CR or LF never
    reaches the log raw), then GitHub's own escapes for what is left (`%`, CR, LF)."""
    return safe(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(s: str) -> str:
    return _data(s).replace(":", "%3A").replace(",", "%2C")


def render_github(reports: Iterable[Report], failures: Iterable[str] = ()) -> str:
    lines = []
    for r in reports:
        path = r.model.path
        file_prop = f"file={_prop(os.path.relpath(path))}," if os.path.exists(path) else ""  # a factory spec has no file
        for f in r.findings:
            text = (f"[{f.location}] " if f.location else "") + f.message + (f" Fix: {f.fix}" if f.fix else "")
            title = f"{f.code} {f.name}"
            lines.append(f"::{COMMAND.get(f.severity, 'warning')} {file_prop}title={_prop(title)}::{_data(text)}")
    for line in failures:
        lines.append(f"::error title=dldoctor::{_data(line)}")
    return "\n".join(lines) + ("\n" if lines else "")
