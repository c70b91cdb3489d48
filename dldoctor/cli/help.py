"""Help pages: no `<bool>` after a flag, no `<list[str]>` or `<str>` placeholders (typer's defaults): an option
without a metavar of its own shows the kind of value it takes in capitals (TEXT, INTEGER, NUMBER), a flag nothing.
Options are grouped in panels (`rich_help_panel`, set in cli/options.py: Model loading, Inputs, Rule selection,
Output, Runtime, ...)."""
from __future__ import annotations

import re
from typing import Any

_KIND = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "", "path": "PATH"}


def _plain(label: str | None) -> str | None:
    if not label or not label.startswith("<"):
        return label
    inner = label.strip("<>")
    m = re.fullmatch(r"list\[(\w+)\]", inner)
    if m:
        return _KIND.get(m.group(1), m.group(1).upper())
    kind = _KIND.get(inner.split()[0], None)
    return kind if kind is not None else inner.upper()


def tidy_metavars() -> None:
    """Patch typer's help rendering once (typer >= 0.16 exposes display_type_rich; older ones are left alone)."""
    import typer.core as core

    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        orig = getattr(cls, "display_type_rich", None)
        if orig is None or getattr(orig, "_dldoctor", False):
            continue

        def display(self: Any, ctx: Any, _orig: Any = orig) -> str | None:
            if getattr(self, "is_flag", False) and not getattr(self, "metavar", None):
                return None
            label = _plain(_orig(self, ctx=ctx))
            return label or None

        display._dldoctor = True  # type: ignore[attr-defined]
        cls.display_type_rich = display
