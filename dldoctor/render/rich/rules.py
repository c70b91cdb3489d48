"""`dldoctor rules` and `dldoctor rules explain` for the terminal.

The list is one line per rule, ruff's `ruff rule --all` made short: code, name and severity in aligned columns, then
the summary cut to the console's width (`rules explain CODE` gives the whole page). A rule page is Markdown: its
prose is wrapped to the terminal, its code blocks and tables never are (a code line longer than the terminal is
folded by the terminal itself, not broken by dldoctor). Rules come in as plain dicts (`cli/rules.py rule_dict`):
this module reads no registry.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from rich.console import Console
from rich.markdown import Markdown
from rich.text import Text

from dldoctor.render.text import plain

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_TABLE_ROW = re.compile(r"^\|(.*)\|[ \t]*$")


def render_rules_list(rules: Sequence[dict[str, Any]], console: Console) -> None:
    """One line per rule: `ARC002  bias-before-batchnorm  warning  summary…` (the summary cut to fit)."""
    if not rules:
        console.print("no rules", highlight=False)
        return
    cw = max(len(r["code"]) for r in rules)
    nw = max(len(r["name"]) for r in rules)
    sw = max(len(r["severity"]) for r in rules)
    room = console.width - (cw + nw + sw + 6) - 1
    for r in rules:
        line = Text()
        line.append_text(plain(r["code"].ljust(cw), style="bold"))
        line.append("  ")
        line.append_text(plain(r["name"].ljust(nw)))
        line.append("  ")
        summary = " ".join(str(r.get("summary") or "").split()) if room >= 40 else ""
        sev = r["severity"].ljust(sw) if summary else r["severity"]
        line.append_text(plain(sev, style=SEVERITY_STYLE.get(r["severity"], "white")))
        if summary:
            if len(summary) > room:
                summary = summary[: room - 1].rstrip() + "…"
            line.append("  ")
            line.append_text(plain(summary, style="dim"))
        console.print(line, soft_wrap=True, highlight=False)
    console.print(Text(f"{len(rules)} rules; `dldoctor rules explain CODE` shows one in full", style="dim"),
                  soft_wrap=True, highlight=False)


def _table_lines(block: str) -> list[str]:
    """A Markdown table as plain lines, one per row: `key: value` for two columns, `first (h2 c2, h3 c3): last`
    for more (the `|---|` rule and the header row dropped, backticks removed)."""
    rows = []
    for row in block.splitlines():
        m = _TABLE_ROW.match(row.strip())
        if m:
            rows.append([c.strip().replace("`", "") for c in m.group(1).split("|")])
    body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
    head = rows[0] if rows else []
    out = []
    for cells in body:
        if len(cells) <= 2:
            out.append(": ".join(cells))
        else:
            mid = ", ".join(f"{h} {c}" for h, c in zip(head[1:-1], cells[1:-1]) if c)
            out.append(f"{cells[0]} ({mid}): {cells[-1]}" if mid else f"{cells[0]}: {cells[-1]}")
    return out


def _segments(page: str) -> list[tuple[str, str]]:
    """The page cut into ("prose", markdown), ("code", text) and ("table", text) pieces, in order."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _FENCE.finditer(page):
        out += _prose_and_tables(page[pos:m.start()])
        out.append(("code", m.group(1).rstrip("\n")))
        pos = m.end()
    out += _prose_and_tables(page[pos:])
    return out


def _prose_and_tables(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    prose: list[str] = []
    table: list[str] = []
    for line in text.splitlines():
        if _TABLE_ROW.match(line.strip()):
            if prose:
                out.append(("prose", "\n".join(prose)))
                prose = []
            table.append(line)
            continue
        if table:
            out.append(("table", "\n".join(table)))
            table = []
        prose.append(line)
    if table:
        out.append(("table", "\n".join(table)))
    if prose and "\n".join(prose).strip():
        out.append(("prose", "\n".join(prose)))
    return out


def render_rule_page(page: str, console: Console) -> None:
    """A rule's Markdown page: prose through Rich's Markdown (wrapped), code blocks and tables as they are."""
    for kind, text in _segments(page):
        if kind == "prose":
            text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
            if text.strip():
                console.print(Markdown(text))
        elif kind == "code":
            console.print()
            console.print(Text("\n".join("    " + ln for ln in text.splitlines()), style="green"),
                          soft_wrap=True, highlight=False)
            console.print()
        else:
            for ln in _table_lines(text):
                console.print(Text("  " + ln), soft_wrap=True, highlight=False)
            console.print()
