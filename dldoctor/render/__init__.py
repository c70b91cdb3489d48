"""Every renderer in one table: (result kind, format) -> the function that turns that result into text.

    render("check", "sarif", reports, failures=..., rules=...)        # -> str
    render("inspect", "rich", reports, depth=3, width=140)            # -> the text a 140-column terminal shows
    render("inspect", "rich", reports, depth=3, console=Console())    # printed by Rich itself; returns ""
    formats("diff")                                                   # -> ("rich", "json", "markdown")

Kinds and the result each takes: "inspect" and "check" a list of Reports, "probe", "profile" and "compress" one
Report (carrying its probe, profile or compress result), "diff" a `dldoctor.report.diff_types.Diff`. A kind's
options (`**opts`) go to each of its renderers, which take what they need: inspect `depth` (rich) and `single`
(json); check `failures`, `summary`, `show_fixes` and `statistics` (concise, full, grouped; `statistics` also
json), `suppressed` (markdown) and `rules` (sarif: the rule metadata, from the registry); profile `max_cv` and `min_speedup` (html). Nothing is imported until a renderer
is used: `dldoctor --help` imports no renderer, and none imports torch.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

__all__ = ["RENDERERS", "TERMINAL_FORMATS", "formats", "render", "renderer", "skipped_lines", "skipped_summary"]


# -- the renderers, each imported when first used ------------------------------------------------------------------
# Text formats: fn(result, **opts) -> str. Rich: fn(result, console, **opts) -> None, printing to the console.


def _inspect_rich(reports: list, console: Any, *, depth: int | None = 3, **_: Any) -> None:
    from dldoctor.render.rich.report import render_rich

    render_rich(reports, console, depth)


def _inspect_json(reports: list, *, single: bool = True, **_: Any) -> str:
    from dldoctor.render.json import render_json

    return render_json(reports, single=single)


def _check_text(style: str) -> Callable[..., None]:
    """concise, full or grouped: ruff's shapes, one line per finding (render/rich/check.py)."""

    def fn(reports: list, console: Any, *, summary: dict[str, int] | None = None, show_fixes: bool = False,
           statistics: bool = False, **_: Any) -> None:
        from dldoctor.render.rich.check import render_check_text

        render_check_text(reports, console, style=style, summary=summary, show_fixes=show_fixes,
                          statistics=statistics)

    fn.__name__ = f"_check_{style}"
    return fn


def _check_json(reports: list, *, summary: dict[str, int], failures: Sequence[str] = (), statistics: bool = False,
                **_: Any) -> str:
    from dldoctor.render.json import render_check_json, render_json_doc, statistics as stats

    if statistics:
        return render_json_doc(stats(reports))
    return render_check_json(reports, summary, list(failures))


def _check_sarif(reports: list, *, rules: Sequence[Any] = (), failures: Sequence[str] = (), **_: Any) -> str:
    from dldoctor.render.sarif import render_sarif

    return render_sarif(reports, list(rules), failures)


def _check_markdown(reports: list, *, failures: Sequence[str] = (), suppressed: int = 0, **_: Any) -> str:
    from dldoctor.render.markdown import render_markdown

    return render_markdown(reports, failures, suppressed)


def _check_github(reports: list, *, failures: Sequence[str] = (), **_: Any) -> str:
    from dldoctor.render.github import render_github

    return render_github(reports, failures)


def _one_json(report: Any, **_: Any) -> str:
    from dldoctor.render.json import render_json

    return render_json([report])


def _probe_rich(report: Any, console: Any, **_: Any) -> None:
    from dldoctor.render.rich.probe import render_probe_rich

    render_probe_rich([report], console)


def _probe_html(report: Any, **_: Any) -> str:
    from dldoctor.render.html.probe import render_probe_html

    return render_probe_html(report.to_dict())


def _profile_rich(report: Any, console: Any, **_: Any) -> None:
    from dldoctor.render.rich.profile import render_profile_rich

    render_profile_rich([report], console)


def _profile_html(report: Any, *, max_cv: float | None = None, min_speedup: float | None = None, **_: Any) -> str:
    from dldoctor.render.html.profile import render_profile_html

    return render_profile_html(report.to_dict(), max_cv=max_cv, min_speedup=min_speedup)


def _compress_rich(report: Any, console: Any, **_: Any) -> None:
    from dldoctor.render.rich.compress import render_compress_rich

    render_compress_rich(report.compress, console)


def _diff_rich(diff: Any, console: Any, **_: Any) -> None:
    from dldoctor.render.rich.diff import render_diff_rich

    render_diff_rich(diff, console)


def _diff_json(diff: Any, **_: Any) -> str:
    from dldoctor.render.rich.diff import render_diff_json

    return render_diff_json(diff)


def _diff_markdown(diff: Any, **_: Any) -> str:
    from dldoctor.render.rich.diff import render_diff_markdown

    return render_diff_markdown(diff)


# -- the table -----------------------------------------------------------------------------------------------------
# A kind's formats in the order `--help` and the "use one of" hint list them; "rich" (the terminal) first.

RENDERERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("inspect", "rich"): _inspect_rich,
    ("inspect", "json"): _inspect_json,
    ("check", "concise"): _check_text("concise"),
    ("check", "full"): _check_text("full"),
    ("check", "grouped"): _check_text("grouped"),
    ("check", "json"): _check_json,
    ("check", "sarif"): _check_sarif,
    ("check", "markdown"): _check_markdown,
    ("check", "github"): _check_github,
    ("probe", "rich"): _probe_rich,
    ("probe", "json"): _one_json,
    ("probe", "html"): _probe_html,
    ("profile", "rich"): _profile_rich,
    ("profile", "json"): _one_json,
    ("profile", "html"): _profile_html,
    ("compress", "rich"): _compress_rich,
    ("compress", "json"): _one_json,
    ("diff", "rich"): _diff_rich,
    ("diff", "json"): _diff_json,
    ("diff", "markdown"): _diff_markdown,
}


# Formats printed by Rich on a console (or recorded from one); every other format is a function returning text.
TERMINAL_FORMATS = frozenset({"rich", "concise", "full", "grouped"})


def formats(kind: str) -> tuple[str, ...]:
    """The formats a kind of result can be rendered in, e.g. formats("check") -> ("rich", "json", "sarif", ...)."""
    out = tuple(f for k, f in RENDERERS if k == kind)
    if not out:
        raise ValueError(f"unknown result kind {kind!r}: one of {', '.join(dict.fromkeys(k for k, _ in RENDERERS))}")
    return out


def renderer(kind: str, fmt: str) -> Callable[..., Any]:
    """The function for (kind, fmt); a ValueError naming the kind's formats when there is none."""
    fn = RENDERERS.get((kind, fmt))
    if fn is None:
        raise ValueError(f"unknown format {fmt!r} for {kind}: use one of {', '.join(formats(kind))}")
    return fn


def render(kind: str, fmt: str, result: Any, *, console: Any = None, width: int = 140, **opts: Any) -> str:
    """`result` as text in `fmt`. Terminal (TERMINAL_FORMATS) output goes to `console` when one is given (returning ""); otherwise it is
    recorded on a console `width` columns wide, without colours, and returned as plain text (what `-o` writes)."""
    fn = renderer(kind, fmt)
    if fmt not in TERMINAL_FORMATS:
        return fn(result, **opts)
    if console is not None:
        fn(result, console, **opts)
        return ""
    from rich.console import Console

    with open(os.devnull, "w") as null:
        recorded = Console(record=True, width=width, file=null)
        fn(result, recorded, **opts)
    return recorded.export_text()


# -- the rules a run skipped (diagnostics the terminal formats leave out) -------------------------------------------


def skipped_summary(reports: Sequence[Any]) -> str | None:
    """`12 rules skipped: 5 need a loss (--loss), ... — --show-skipped lists them`, or None (render/skipped.py)."""
    from dldoctor.render.skipped import skipped_summary as fn

    return fn(reports)


def skipped_lines(reports: Sequence[Any], with_path: bool = True) -> list[str]:
    """Each group of skipped rules of each report, one line: `PATH: rules skipped (needs ...): CODES`."""
    from dldoctor.render.skipped import skipped_lines as fn

    return fn(reports, with_path)
