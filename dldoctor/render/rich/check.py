"""`dldoctor check` for the terminal, in ruff's shapes: one line per finding, never a table.

    concise   cnn.pt:layer1.0.conv1: ARC002 Conv2d layer1.0.conv1 feeds BatchNorm2d but keeps a bias ...
              cnn.pt: BUD001 12.3M parameters, over the budget of 10M        (a model-level finding)
    full      the concise line, then `  = rule: NAME (SEVERITY)` and `  = fix: ...` (and the compress transform)
    grouped   the model's path on its own line, then `  LOCATION: CODE message` for each of its findings

and a summary (`Found 3 errors, 2 warnings in 1 model.`, or `All checks passed!`). `--show-fixes` adds the fix
line to the concise and grouped forms; `--statistics` prints one line per rule code with its count instead of the
findings (`COUNT  CODE  [SEVERITY] name`). Lines are never wrapped by dldoctor (a pipe gets one finding per line; a terminal folds long ones
itself), and every name or string that came from a model file is shown literally with control characters escaped
(`render.text.plain`).
"""
from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.text import Text

from dldoctor.render.json import statistics as finding_statistics
from dldoctor.render.text import plain, safe
from dldoctor.report.types import Report

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
STYLES = ("concise", "full", "grouped")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _head(path: str, f: Any, with_path: bool = True) -> Text:
    """`PATH:LOCATION: CODE message` (or `PATH: CODE message` without a location)."""
    line = Text()
    if with_path:
        line.append_text(plain(path, style="bold"))
        if f.location:
            line.append(":", style="dim")
            line.append_text(plain(f.location, style="cyan"))
        line.append(": ", style="dim")
    elif f.location:
        line.append_text(plain(f.location, style="cyan"))
        line.append(": ", style="dim")
    line.append_text(plain(f.code, style=SEVERITY_STYLE.get(f.severity, "white")))
    line.append(" ")
    line.append_text(plain(f.message))
    return line


def _fix(f: Any, indent: str) -> Text | None:
    if not f.fix and not f.transform:
        return None
    line = Text(f"{indent}= fix: ", style="dim")
    line.append_text(plain(f.fix or "-"))
    if f.transform:
        line.append(f" (dldoctor compress -t {safe(f.transform)})", style="dim")
    return line


def _print(console: Console, text: Text) -> None:
    console.print(text, soft_wrap=True, highlight=False)


def totals(reports: Sequence[Report]) -> dict[str, int]:
    t = {"error": 0, "warning": 0, "info": 0}
    for r in reports:
        for f in r.findings:
            t[f.severity] = t.get(f.severity, 0) + 1
    return t


def summary_line(reports: Sequence[Report], summary: dict[str, int] | None = None) -> Text:
    """`Found 3 errors, 2 warnings in 1 model.`, `All checks passed!`, and what could not be checked."""
    s = summary or {}
    t = totals(reports)
    models = s.get("files", len(reports))
    counts = [(t[k], k) for k in ("error", "warning", "info") if t.get(k)]
    line = Text()
    if counts:
        line.append("Found ")
        for i, (n, sev) in enumerate(counts):
            if i:
                line.append(", ")
            line.append(_plural(n, sev), style=SEVERITY_STYLE[sev])
        line.append(f" in {_plural(models, 'model')}")
    elif s.get("failed") or s.get("rule_errors"):
        line.append(f"No findings in {_plural(models, 'model')}")
    else:
        line.append("All checks passed!", style="bold green")
        if s.get("baseline_suppressed"):
            line.append(f" ({s['baseline_suppressed']} known from the baseline not shown)", style="dim")
        return line
    if s.get("baseline_suppressed"):
        line.append(f" ({s['baseline_suppressed']} known from the baseline not shown)", style="dim")
    if s.get("failed"):
        line.append(f"; {_plural(s['failed'], 'model')} could not be checked", style="bold red")
    if s.get("rule_errors"):
        line.append(f"; {_plural(s['rule_errors'], 'rule failure')}", style="bold red")
    line.append(".")
    return line


def render_statistics(reports: Sequence[Report], console: Console) -> None:
    rows = finding_statistics(list(reports))
    width = max((len(str(x["count"])) for x in rows), default=1)
    cw = max((len(safe(x["code"])) for x in rows), default=1)
    for x in rows:
        line = Text(f"{x['count']:>{width}}  ")
        line.append_text(plain(safe(x["code"]).ljust(cw), style=SEVERITY_STYLE.get(x["severity"], "white")))
        line.append(f"  [{x['severity']}] ")
        line.append_text(plain(x["name"]))
        _print(console, line)


def render_check_text(reports: Sequence[Report], console: Console, *, style: str = "concise",
                      summary: dict[str, int] | None = None, show_fixes: bool = False,
                      statistics: bool = False) -> None:
    """Print the findings of `reports` in one of STYLES, then the summary line."""
    if style not in STYLES:
        raise ValueError(f"unknown check style {style!r}: one of {', '.join(STYLES)}")
    if statistics:
        render_statistics(reports, console)
    else:
        fixes = show_fixes or style == "full"
        for r in reports:
            if style == "grouped":
                if not r.findings:
                    continue
                _print(console, plain(r.model.path, style="bold underline") + Text(":"))
            for f in r.findings:
                grouped = style == "grouped"
                line = _head(r.model.path, f, with_path=not grouped)
                _print(console, Text("  ") + line if grouped else line)
                indent = "    " if grouped else "  "
                if style == "full":
                    rule = Text(f"{indent}= rule: ", style="dim")
                    rule.append_text(plain(f.name))
                    rule.append(f" ({safe(f.severity)})", style=SEVERITY_STYLE.get(f.severity, "white"))
                    _print(console, rule)
                if fixes:
                    fix = _fix(f, indent)
                    if fix is not None:
                        _print(console, fix)
            if style == "grouped":
                console.print()
    if style == "full" and not statistics and any(r.findings for r in reports):
        console.print()
    _print(console, summary_line(reports, summary))
