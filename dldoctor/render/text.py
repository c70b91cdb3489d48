"""File-derived text for Rich: shown as plain, visible characters, never read as markup or terminal control.

Tensor, layer, node and op names, metadata and file names come from files written by strangers. In Rich output
they go in a `Text` (`plain`), or, inside a markup string, through `markup`; either way control characters are
escaped first (`dldoctor.errors.safe`).
"""
from __future__ import annotations

from rich.markup import escape
from rich.text import Text

from dldoctor.errors import safe

__all__ = ["markup", "plain", "safe"]


def plain(text: object, style: str = "") -> Text:
    """A Rich Text that shows `text` literally: `[bold]` stays brackets, ESC shows as \\x1b."""
    return Text(safe(text), style=style)


def markup(text: object) -> str:
    """`text` made safe to put inside a Rich markup string."""
    return escape(safe(text))
