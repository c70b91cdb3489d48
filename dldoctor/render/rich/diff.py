"""`dldoctor diff` output: a Rich table for the terminal, Markdown for pull-request comments, JSON."""
from __future__ import annotations

import json
from typing import Any

from dldoctor.render.markdown import cell, code
from dldoctor.report.diff_types import Diff, LayerChange, MetricDelta
from dldoctor.report.units import nbytes, shape, si
from dldoctor.render.text import markup, plain

MAX_LAYERS = 40  # layer changes shown in rich/markdown; JSON keeps them all


def render_diff_json(diff: Diff) -> str:
    from dldoctor.render.json import clean

    return json.dumps(clean(diff.to_dict()), indent=2) + "\n"


def _val(m: MetricDelta, n: int | None, signed: bool = False) -> str:
    if n is None:
        return "n/a"
    text = nbytes(abs(n)) if m.unit == "bytes" else si(abs(n))
    if n < 0:
        return "-" + text
    return ("+" if signed and n > 0 else "") + text


def _status(s: str) -> str:
    return "" if s == "complete" else f" ({s})"


def _pct(m: MetricDelta) -> str:
    if m.change_pct is None:
        return "n/a" if m.delta is None or m.delta != 0 else "0.0%"
    return f"{m.change_pct:+.1f}%"


def _rf_text(side: dict[str, Any]) -> str:
    if side["global"]:
        return "global"
    if side["size"] is None:
        return "n/a"
    return "×".join(f"{s:g}" for s in side["size"]) + _status(side["status"])


def _rf_delta(rf: dict[str, Any]) -> str:
    if rf["delta"] is None:
        return "changed" if _rf_text(rf["old"]) != _rf_text(rf["new"]) else "-"
    return "×".join(f"{d:+g}" for d in rf["delta"])


def _layer_cells(c: LayerChange) -> tuple[str, str, str, str]:
    def pair(a: Any, b: Any, fmt: Any) -> str:
        if c.change == "added":
            return fmt(b)
        if c.change == "removed":
            return fmt(a)
        return fmt(b) if a == b else f"{fmt(a)} → {fmt(b)}"

    typ = pair(c.type_old, c.type_new, lambda x: x or "-")
    params = pair(c.params_old, c.params_new, lambda x: si(x) if x is not None else "-")
    macs = pair(c.macs_old, c.macs_new, lambda x: si(x) if x is not None else "-")
    out = pair(c.output_shape_old, c.output_shape_new, shape)
    return typ, params, macs, out


def _name(side: dict[str, Any]) -> str:
    src, path = side.get("source") or side["path"], side["path"]
    return src if src == path else f"{src} (report of {path})"


def _title(diff: Diff) -> str:
    return f"{_name(diff.old)} → {_name(diff.new)}"


def _md(text: str) -> str:
    return cell(text)


def render_diff_rich(diff: Diff, console: Any, max_layers: int = MAX_LAYERS) -> None:
    from rich.table import Table

    console.print(f"[bold]dldoctor diff[/] {markup(_title(diff))}")
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col, just in (("", "left"), ("old", "right"), ("new", "right"), ("delta", "right"), ("change", "right")):
        t.add_column(col, justify=just)
    for m in diff.metrics:
        style = "red" if (m.delta or 0) > 0 else "green" if (m.delta or 0) < 0 else ""
        t.add_row(plain(m.label), _val(m, m.old) + _status(m.old_status), _val(m, m.new) + _status(m.new_status),
                  f"[{style}]{_val(m, m.delta, True)}[/]" if style else _val(m, m.delta, True), _pct(m))
    rf = diff.receptive_field
    t.add_row("receptive field", _rf_text(rf["old"]), _rf_text(rf["new"]), _rf_delta(rf), "")
    console.print(t)
    if diff.layers:
        console.print(f"\n[bold]layer changes[/] ({len(diff.layers)})")
        lt = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("", "layer", "type", "params", "MACs", "output"):
            lt.add_column(col)
        mark = {"added": "[green]+[/]", "removed": "[red]-[/]", "changed": "[yellow]~[/]"}
        for c in diff.layers[:max_layers]:
            lt.add_row(mark[c.change], plain(c.path), *map(plain, _layer_cells(c)))
        console.print(lt)
        if len(diff.layers) > max_layers:
            console.print(f"  … {len(diff.layers) - max_layers} more (use --format json for all)")
    else:
        console.print("\nno layer changes")
    if diff.findings_compared:
        console.print(f"\n[bold]findings[/]: {len(diff.new_findings)} new, {len(diff.fixed_findings)} fixed")
        for f in diff.new_findings:
            console.print(f"  [red]+ {markup(f.code)}[/] {markup(f.severity)} {markup(f.location or '')}: {markup(f.message)}",
                          highlight=False)
        for f in diff.fixed_findings:
            console.print(f"  [green]- {markup(f.code)}[/] {markup(f.location or '')}: {markup(f.message)}", highlight=False)
    for n in diff.notes:
        console.print(f"[yellow]note:[/] {markup(n)}", highlight=False)
    if diff.budgets:
        console.print("\n[bold]budgets[/]")
        icon = {"ok": "[green]ok[/]", "exceeded": "[red]FAIL[/]", "unconfirmed": "[yellow]?[/]", "unavailable": "[yellow]?[/]"}
        for b in diff.budgets:
            console.print(f"  {icon[b.verdict]} {markup(b.message)}", highlight=False)


def render_diff_markdown(diff: Diff, max_layers: int = MAX_LAYERS) -> str:
    lines = [f"### dldoctor diff: {_md(_title(diff))}", ""]
    if diff.budgets:
        v = diff.violations
        lines += [("**Budget exceeded:** " + "; ".join(_md(b.message) for b in v)) if v else "**Budgets:** all within limits", ""]
    lines += ["| | old | new | delta | change |", "|---|---:|---:|---:|---:|"]
    for m in diff.metrics:
        lines.append(f"| {_md(m.label)} | {_val(m, m.old)}{_status(m.old_status)} | {_val(m, m.new)}{_status(m.new_status)} "
                     f"| {_val(m, m.delta, True)} | {_pct(m)} |")
    rf = diff.receptive_field
    lines.append(f"| receptive field | {_rf_text(rf['old'])} | {_rf_text(rf['new'])} | {_rf_delta(rf)} | |")
    lines.append("")
    if diff.layers:
        lines += [f"<details><summary>{len(diff.layers)} layer changes</summary>", "",
                  "| | layer | type | params | MACs | output |", "|---|---|---|---:|---:|---|"]
        sign = {"added": "+", "removed": "−", "changed": "~"}
        for c in diff.layers[:max_layers]:
            cells = " | ".join(map(_md, _layer_cells(c)))
            lines.append(f"| {sign[c.change]} | {code(c.path)} | {cells} |")
        if len(diff.layers) > max_layers:
            lines.append(f"| | … {len(diff.layers) - max_layers} more | | | | |")
        lines += ["", "</details>", ""]
    if diff.findings_compared:
        lines.append(f"**Findings:** {len(diff.new_findings)} new, {len(diff.fixed_findings)} fixed")
        lines.append("")
        for f in diff.new_findings:
            where = f" at {code(f.location, table=False)}" if f.location else ""
            lines.append(f"- new {code(f.code, table=False)} ({_md(f.severity)}){where}: {_md(f.message)}")
        for f in diff.fixed_findings:
            where = f" at {code(f.location, table=False)}" if f.location else ""
            lines.append(f"- fixed {code(f.code, table=False)}{where}: {_md(f.message)}")
        lines.append("")
    for n in diff.notes:
        lines.append(f"> note: {_md(n)}")
    if diff.budgets:
        lines += ["", "| budget | verdict | |", "|---|---|---|"]
        for b in diff.budgets:
            lines.append(f"| {_md(b.budget)} | {_md(b.verdict)} | {_md(b.message)} |")
    return "\n".join(lines).rstrip() + "\n"
