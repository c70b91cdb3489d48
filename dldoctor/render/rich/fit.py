"""Tables that fit the terminal without splitting a word: a layer path, a shape, a type name or a number is never
broken across lines (Rich's `fold` would print `layers` / `.2.downsam` / `ple`). Like torchinfo's fixed-width
columns: when the table is too wide for the console, the least useful columns are dropped first, then the
identifier columns are shortened with an ellipsis (a path keeps its end, the part that names the layer; a type
keeps its start), and the caption says what was left out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich.table import Table
from rich.text import Text

ELLIPSIS = "…"


@dataclass
class Col:
    header: str
    keep: int = 50  # columns with the lowest `keep` are dropped first when the table is too wide
    # "start" (keep the end: paths), "end" (keep the start: type names), "fold" (wrap what does not fit: names that
    # must be shown whole, such as a tensor name from a hostile file), None: never
    shorten: str | None = None
    min_width: int = 6
    justify: str = "left"


def _width(cell: Any) -> int:
    if isinstance(cell, Text):
        return max((len(line) for line in cell.plain.split("\n")), default=0)
    return max((len(line) for line in str(cell).split("\n")), default=0)


def _cut(cell: Any, width: int, how: str) -> Any:
    """`cell` shortened to `width` characters with an ellipsis: its end kept ("start") or its start ("end")."""
    text = cell if isinstance(cell, Text) else Text(str(cell))
    if len(text.plain) <= width or width < 2:
        return cell
    if how == "start":
        lead = len(text.plain) - len(text.plain.lstrip(" "))  # a nested layer's indent stays
        lead = min(lead, max(0, width - 4))
        body = text[lead:]
        keep = width - lead - 1
        out = Text(" " * lead) + Text(ELLIPSIS, style="dim") + body[len(body.plain) - keep:]
    else:
        out = text[: width - 1] + Text(ELLIPSIS, style="dim")
    return out


def fit_table(cols: Sequence[Col], rows: Sequence[Sequence[Any]], width: int | None, **table_kw: Any) -> Table:
    """A Rich table of `rows` under `cols` no wider than `width` (None: as wide as it needs) whose cells never
    wrap. Columns are dropped (lowest `keep` first) and then shortenable ones cut with an ellipsis until it fits;
    a column that cannot be cut is never split. Dropped columns are named in the caption."""
    box_cost = 3  # a bordered column costs its padding (2) and one rule; the table one more rule
    natural = [max([_width(c.header)] + [_width(r[i]) for r in rows]) for i, c in enumerate(cols)]
    keep = list(range(len(cols)))

    def total(idx: list[int], widths: list[int]) -> int:
        return sum(widths[i] for i in idx) + box_cost * len(idx) + 1

    def squeezed(idx: list[int]) -> list[int] | None:
        """Widths for the kept columns that fit, shortening what may be shortened; None when they cannot."""
        widths = list(natural)
        over = total(idx, widths) - width
        if over <= 0:
            return widths
        cuttable = sorted((i for i in idx if cols[i].shorten), key=lambda i: -natural[i])
        room = sum(max(0, natural[i] - max(cols[i].min_width, _width(cols[i].header))) for i in cuttable)
        if room < over:
            return None
        while over > 0:  # take one character at a time from the widest cuttable column
            i = max(cuttable, key=lambda j: widths[j] - max(cols[j].min_width, _width(cols[j].header)))
            widths[i] -= 1
            over -= 1
        return widths

    widths = list(natural)
    dropped: list[str] = []
    if width is not None:
        fitted = squeezed(keep)
        while fitted is None and len(keep) > 1:
            worst = min(keep, key=lambda i: cols[i].keep)
            keep.remove(worst)
            dropped.append(cols[worst].header)
            fitted = squeezed(keep)
        widths = fitted or widths
    t = Table(**table_kw)
    for i in keep:
        c = cols[i]
        fold = c.shorten == "fold"
        t.add_column(c.header, justify=c.justify, no_wrap=not fold, overflow="fold" if fold else "ellipsis",
                     min_width=widths[i] if c.shorten else None, max_width=widths[i] if c.shorten else None)
    for r in rows:
        t.add_row(*[_cut(r[i], widths[i], cols[i].shorten) if cols[i].shorten in ("start", "end") else r[i]
                    for i in keep])
    if dropped:
        note = f"{', '.join(dropped)}: left out at this width (wider terminal, or --format json / html)"
        t.caption = f"{t.caption}; {note}" if t.caption else note
    return t
