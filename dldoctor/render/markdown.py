"""Markdown for pull-request comments: a totals line, then per model a summary table and its findings."""
from __future__ import annotations

import re
from typing import Iterable

from dldoctor.errors import safe
from dldoctor.report.units import nbytes, si
from dldoctor.report.types import Report

ICON = {"error": "🔴 error", "warning": "🟡 warning", "info": "🔵 info"}


_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def cell(text: object) -> str:
    """Text from a report as one table cell of plain text: control characters escaped (a newline shows as \\n),
    and every character Markdown or HTML would read as markup (links, images, tags, emphasis, `|`) backslash-escaped."""
    return _SPECIAL.sub(r"\\\1", "" if text is None else safe(text))


def code(text: object, table: bool = True) -> str:
    """Text as a code span (nothing inside is markup): control characters escaped, pipes escaped inside a table,
    and a fence longer than any run of backticks inside."""
    if text is None or text == "":
        return "-"
    s = safe(text).replace("|", "\\|") if table else safe(text)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def counts(reports: Iterable[Report]) -> dict[str, int]:
    c = {"error": 0, "warning": 0, "info": 0}
    for r in reports:
        for f in r.findings:
            c[f.severity] = c.get(f.severity, 0) + 1
    return c


def render_markdown(reports: list[Report], failures: Iterable[str] = (), suppressed: int = 0) -> str:
    c = counts(reports)
    lines = ["## dldoctor check", ""]
    total = f"**{c['error']}** errors, **{c['warning']}** warnings, **{c['info']}** infos in {len(reports)} model(s)"
    if suppressed:
        total += f" ({suppressed} known from the baseline not shown)"
    lines += [total, ""]
    failures = list(failures)
    if failures:
        lines += ["**Could not check:**", ""] + [f"- {cell(x)}" for x in failures] + [""]
    for r in reports:
        rc = counts([r])
        lines += [f"### {code(r.model.path, table=False)}", ""]
        lines += ["| params | MACs | weights | inference memory | errors | warnings | infos |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        macs = si(r.flops.macs) if r.flops.macs is not None else r.flops.status
        lines.append(
            f"| {si(r.params.total)} | {macs} | {nbytes(r.params.bytes + r.params.buffer_bytes)} "
            f"| {nbytes(r.memory.inference_peak_bytes)} | {rc['error']} | {rc['warning']} | {rc['info']} |"
        )
        lines.append("")
        if r.findings:
            lines += ["| severity | code | location | message | fix |", "|---|---|---|---|---|"]
            for f in r.findings:
                lines.append(
                    f"| {ICON.get(f.severity, cell(f.severity))} | {code(f.code)} {cell(f.name)} | {code(f.location)} "
                    f"| {cell(f.message)} | {cell(f.fix) or '-'} |"
                )
        else:
            lines.append("No findings.")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
