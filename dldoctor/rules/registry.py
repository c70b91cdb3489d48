"""A rule is declared once: a decorated pure function whose docstring is its documentation.

    @rule(code="ARC004", name="dropout-too-high", family="arch", severity=Severity.WARNING,
          needs=("graph",), source=CHOLLET)  # a seed named in dldoctor/rules/seeds.py
    def dropout_too_high(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
        '''## What it does ... ## Why is this bad? ... ## Example ... ## Use instead ... ## Options ...'''
        yield Hit("Dropout(p=0.8) drops most activations", location="head.drop", evidence={"p": 0.8},
                  fix="use p <= 0.5")

Registration rejects duplicate codes or names, codes that do not match the family's
prefix, non-kebab names, unknown facts, seeds that do not exist, and docstrings
without every section. The engine turns each `Hit` into a `Finding`.
"""
from __future__ import annotations

import inspect as _inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from dldoctor.report.facts import FACT_NAMES
from dldoctor.rules.options import FAMILY_OPTIONS, FAMILY_PREFIX
from dldoctor.rules.seeds import SEEDS
from dldoctor.report.types import Severity

SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "Options")
_CODE = re.compile(r"^[A-Z]{3}\d{3}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class RuleDefinitionError(Exception):
    pass


@dataclass
class Hit:
    """What a rule yields; the engine adds code, name, severity and source."""

    message: str
    location: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str | None = None
    transform: str | None = None  # the `dldoctor compress` transform that applies the fix, if any
    severity: Severity | None = None  # override the rule's default for this hit (e.g. NaN weights -> error)


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    family: str
    severity: Severity
    needs: tuple[str, ...]
    sources: tuple[str, ...]
    fn: Callable[..., Iterable[Hit]]
    doc: str
    sections: dict[str, str]

    @property
    def summary(self) -> str:
        return self.sections["What it does"].strip().split("\n\n")[0].replace("\n", " ")

    def run(self, facts: Any, opts: Any) -> Iterator[Hit]:
        yield from self.fn(facts, opts)


REGISTRY: dict[str, Rule] = {}
_NAMES: dict[str, str] = {}


def parse_sections(doc: str) -> dict[str, str]:
    doc = _inspect.cleandoc(doc or "")
    parts = re.split(r"^## +(.+?)\s*$", doc, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def rule(
    *,
    code: str,
    name: str,
    family: str,
    severity: Severity,
    needs: tuple[str, ...] = ("report",),
    source: str | tuple[str, ...],
) -> Callable[[Callable[..., Iterable[Hit]]], Callable[..., Iterable[Hit]]]:
    def register(fn: Callable[..., Iterable[Hit]]) -> Callable[..., Iterable[Hit]]:
        sources = (source,) if isinstance(source, str) else tuple(source)
        problems = []
        if family not in FAMILY_OPTIONS:
            problems.append(f"unknown family {family!r}")
        elif not code.startswith(FAMILY_PREFIX[family]):
            problems.append(f"code must start with {FAMILY_PREFIX[family]} for family {family}")
        if not _CODE.match(code):
            problems.append("code must be three capitals and three digits")
        if not _NAME.match(name):
            problems.append("name must be kebab-case")
        if code in REGISTRY:
            problems.append(f"duplicate code (already {REGISTRY[code].name})")
        if name in _NAMES:
            problems.append(f"duplicate name (already {_NAMES[name]})")
        bad_needs = [n for n in needs if n not in FACT_NAMES]
        if bad_needs:
            problems.append(f"unknown facts {bad_needs}")
        bad_seeds = [s for s in sources if s not in SEEDS]
        if not sources or bad_seeds:
            problems.append(f"sources must name seed files, got {bad_seeds or 'none'}")
        sections = parse_sections(fn.__doc__ or "")
        missing = [s for s in SECTIONS if not sections.get(s)]
        if missing:
            problems.append(f"docstring lacks sections {missing}")
        if problems:
            raise RuleDefinitionError(f"rule {code} {name}: " + "; ".join(problems))
        REGISTRY[code] = Rule(code, name, family, Severity(severity), tuple(needs), sources, fn,
                              _inspect.cleandoc(fn.__doc__ or ""), sections)
        _NAMES[name] = code
        return fn

    return register


def unregister(code: str) -> None:
    """For tests that register throwaway rules."""
    r = REGISTRY.pop(code, None)
    if r is not None:
        _NAMES.pop(r.name, None)


def all_rules() -> list[Rule]:
    """Every rule: the built-in catalog, then third-party rules from the `dldoctor.rules` entry-point group."""
    _load_builtin()
    _load_entry_points()
    return sorted(REGISTRY.values(), key=lambda r: r.code)


_loaded = {"builtin": False, "plugins": False}


def _load_builtin() -> None:
    if not _loaded["builtin"]:
        _loaded["builtin"] = True
        import dldoctor.rules.catalog  # noqa: F401  (each module registers its rules)


def _load_entry_points() -> None:
    if _loaded["plugins"]:
        return
    _loaded["plugins"] = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="dldoctor.rules"):
        ep.load()  # importing the module registers its rules
