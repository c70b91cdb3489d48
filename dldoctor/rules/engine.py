"""Run the selected rules over one model's facts; turn their hits into findings.

Selection, like ruff: a selector is `ALL`, a code (`ARC004`), a code prefix (`ARC`,
`ARC0`), a family name (`arch`) or a rule name (`dropout-too-high`). A rule is on when
the most specific selector that matches it comes from `select`/`extend-select`; at equal
specificity `ignore` wins. Per-file ignores add selectors to `ignore` for the files their
glob matches. A rule whose facts are missing is skipped with the reason; a rule that
raises is reported in `errors` and the other rules still run.
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from dldoctor.rules.config import Config
from dldoctor.errors import ConfigError
from dldoctor.report.facts import Facts
from dldoctor.rules.options import FAMILY_OPTIONS, FAMILY_PREFIX
from dldoctor.rules.registry import Hit, Rule, all_rules
from dldoctor.report.types import Finding, Severity

SEVERITY_ORDER = {Severity.ERROR.value: 0, Severity.WARNING.value: 1, Severity.INFO.value: 2}

_PREFIX = re.compile(r"^[A-Z]{1,3}[0-9]{0,3}$")


@dataclass
class SkippedRule:
    code: str
    name: str
    reason: str


@dataclass
class RuleResult:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[SkippedRule] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (code, message)


# -- selection ----------------------------------------------------------------------


def _specificity(selector: str, r: Rule) -> int | None:
    """How specifically `selector` names rule `r` (higher wins), or None when it does not."""
    s = selector.strip()
    if s.upper() == "ALL":
        return 0
    if s.lower() == r.family:
        return 3
    if s == r.name:
        return 7
    u = s.upper()
    if _PREFIX.match(u) and r.code.startswith(u):
        return len(u)
    return None


def check_selectors(selectors: Iterable[str], rules: list[Rule], what: str = "selector") -> None:
    """Unknown selectors are an error: a typo must not silently select nothing."""
    names = {r.name for r in rules}
    prefixes = set(FAMILY_PREFIX.values())
    for s in selectors:
        u = s.strip().upper()
        if u == "ALL" or s.strip().lower() in FAMILY_OPTIONS or s.strip() in names:
            continue
        if _PREFIX.match(u) and (len(u) < 3 and any(p.startswith(u) for p in prefixes) or u[:3] in prefixes):
            if len(u) < 6 or any(r.code == u for r in rules):
                continue
        raise ConfigError(
            f"unknown rule {what} {s!r}",
            "use ALL, a code (ARC004), a code prefix (ARC), a family (arch) or a rule name; `dldoctor rules` lists them",
        )


def _file_ignores(config: Config, path: str | None) -> tuple[str, ...]:
    if not path or not config.per_file_ignores:
        return ()
    candidates = {PurePosixPath(path.replace(os.sep, "/")).as_posix(), os.path.basename(path)}
    if config.root:
        try:
            rel = os.path.relpath(os.path.abspath(path), config.root)
            if not rel.startswith(".."):
                candidates.add(Path(rel).as_posix())
        except ValueError:  # another drive on Windows
            pass
    out: list[str] = []
    for glob, codes in config.per_file_ignores.items():
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            out.extend(codes)
    return tuple(out)


def select_rules(config: Config, path: str | None = None, rules: list[Rule] | None = None) -> list[Rule]:
    """The rules that are on for this file, in code order."""
    rules = all_rules() if rules is None else rules
    on = tuple(config.select) + tuple(config.extend_select)
    off = tuple(config.ignore) + _file_ignores(config, path)
    check_selectors(on + off, rules)
    chosen = []
    for r in rules:
        best_on = max((s for s in (_specificity(x, r) for x in on) if s is not None), default=None)
        best_off = max((s for s in (_specificity(x, r) for x in off) if s is not None), default=None)
        if best_on is not None and (best_off is None or best_on > best_off):
            chosen.append(r)
    return sorted(chosen, key=lambda r: r.code)


# -- running ------------------------------------------------------------------------


def finding_of(r: Rule, hit: Hit) -> Finding:
    sev = Severity(hit.severity) if hit.severity is not None else r.severity
    return Finding(
        code=r.code,
        name=r.name,
        severity=sev.value,
        message=hit.message,
        location=hit.location,
        evidence=dict(hit.evidence or {}),
        fix=hit.fix,
        transform=hit.transform,
        source=", ".join(r.sources),
    )


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), f.code, f.location or "", f.message))


def run_rules(facts: Facts, config: Config, path: str | None = None, rules: list[Rule] | None = None) -> RuleResult:
    """Judge one model's facts with every selected rule. Never raises for a rule's own failure."""
    result = RuleResult()
    for r in select_rules(config, path, rules):
        missing = [n for n in r.needs if not facts.has(n)]
        if missing:
            by_reason: dict[str, list[str]] = {}  # facts missing for one reason are named together
            for n in missing:
                by_reason.setdefault(facts.why_missing(n), []).append(n)
            why = "; ".join(f"needs {' and '.join(names)}: {reason}" for reason, names in by_reason.items())
            result.skipped.append(SkippedRule(r.code, r.name, why))
            continue
        try:
            hits = list(r.run(facts, config.family(r.family)))
            bad = [h for h in hits if not isinstance(h, Hit)]
            if bad:
                raise TypeError(f"yielded {type(bad[0]).__name__}, not Hit")
            found = [finding_of(r, h) for h in hits]
        except Exception as e:  # noqa: BLE001 - one broken rule must not stop the others
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            result.errors.append((r.code, f"{type(e).__name__}: {first}" if first else type(e).__name__))
            continue
        result.findings.extend(found)
    result.findings = sort_findings(result.findings)
    return result
