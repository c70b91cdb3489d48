"""Judging: facts from a report (and its module), the selected rules run on them, findings filed on the report.

Every verb that ends in findings (check, probe, profile, compress) goes through `judge`; it imports no other verb.
"""
from __future__ import annotations

from typing import Any

from dldoctor.report.types import Report
from dldoctor.rules.config import Config
from dldoctor.rules.engine import RuleResult, run_rules


def judge(report: Report, module: Any = None, config: Config | None = None, loss: str | None = None, *,
          dataset_size: int | None = None, baseline: Report | None = None) -> RuleResult:
    """Run the selected rules on a report (with its probe or profile, when there is one) and file the findings."""
    from dldoctor.collect.facts import build_facts

    config = config or Config()
    facts = build_facts(report, module, loss=loss, dataset_size=dataset_size, baseline=baseline)
    if facts.graph is not None:  # which output is the head: --head / [tool.dldoctor.output] head
        facts.graph.head_name = config.family("output").head
    result = run_rules(facts, config, path=report.model.path)
    apply_result(report, result)
    return result


def code_ranges(codes: list[str]) -> str:
    """"TRN001, TRN002, TRN003, ARC005" -> "ARC005, TRN001-TRN003": runs of consecutive codes as ranges."""
    import re

    parsed = sorted((m.group(1), int(m.group(2)), c) if (m := re.fullmatch(r"([A-Z]+)(\d+)", c)) else (c, -1, c)
                    for c in codes)
    out: list[str] = []
    i = 0
    while i < len(parsed):
        j = i
        while (j + 1 < len(parsed) and parsed[i][1] >= 0 and parsed[j + 1][0] == parsed[i][0]
               and parsed[j + 1][1] == parsed[j][1] + 1):
            j += 1
        out.append(parsed[i][2] if j - i < 2 else f"{parsed[i][2]}-{parsed[j][2]}")
        if j - i == 1:
            out.append(parsed[j][2])
        i = j + 1
    return ", ".join(out)


def apply_result(report: Report, result: RuleResult) -> None:
    """Findings into the report; skipped rules (grouped by reason) and failed rules into its diagnostics."""
    report.findings = list(result.findings)
    by_reason: dict[str, list[str]] = {}
    for s in result.skipped:
        by_reason.setdefault(s.reason, []).append(s.code)
    for reason, codes in by_reason.items():
        report.diag("info", f"rules skipped ({reason}): {code_ranges(codes)}", "rules")
    for code, message in result.errors:
        report.diag("warning", f"rule {code} failed and was not applied: {message}", code)
