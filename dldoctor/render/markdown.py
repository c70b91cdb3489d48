"""Markdown for pull-request comments: a totals line, then per model a summary table and its findings."""
from __future__ import annotations

from typing import Iterable

from dldoctor.render.numbers import nbytes, si
from dldoctor.types import Report

ICON = {"error": "🔴 error", "warning": "🟡 warning", "info": "🔵 info"}


def _cell(text: object) -> str:
    """One table cell: pipes escaped, newlines as <br>."""
    s = "" if text is None else str(text)
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _code(text: str | None) -> str:
    return f"`{text}`" if text else "-"


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
        lines += ["**Could not check:**", ""] + [f"- {_cell(x)}" for x in failures] + [""]
    for r in reports:
        rc = counts([r])
        lines += [f"### `{_cell(r.model.path)}`", ""]
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
                    f"| {ICON.get(f.severity, f.severity)} | `{f.code}` {_cell(f.name)} | {_code(_cell(f.location) if f.location else None)} "
                    f"| {_cell(f.message)} | {_cell(f.fix) or '-'} |"
                )
        else:
            lines.append("No findings.")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
