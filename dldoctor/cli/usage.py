"""Usage errors in the tool's own one-line style: `dldoctor: error: ...` and a hint, exit 2, instead of Click's
boxed panel (whose 'Possible options' lists any option sharing a letter). Also the parse-time checks of option
values shared by several commands (an unknown dtype, a timeout that is not positive)."""
from __future__ import annotations

import difflib
import sys
from typing import Any

import typer


def _exceptions() -> Any:
    """The click that typer uses: its own vendored copy (typer >= 0.16) or the click package."""
    import typer.core as core

    vendored = getattr(core, "_click", None)
    return vendored.exceptions if vendored is not None else __import__("click").exceptions


def _options(ctx: Any) -> list[str]:
    cmd = getattr(ctx, "command", None)
    return [o for p in getattr(cmd, "params", []) for o in (*getattr(p, "opts", []), *getattr(p, "secondary_opts", []))]


def one_line(e: Any) -> tuple[str, str]:
    """(the error line, the hint) for a Click usage error."""
    ex = _exceptions()
    ctx = getattr(e, "ctx", None)
    path = getattr(ctx, "command_path", None) or "dldoctor"
    helps = f"{path} --help lists the options"
    if isinstance(e, ex.NoSuchOption):
        opts = {o.lstrip("-"): o for o in _options(ctx)}
        close = [opts[c] for c in difflib.get_close_matches(e.option_name.lstrip("-"), list(opts), n=1, cutoff=0.75)]
        return f"no such option: {e.option_name}", (f"did you mean {close[0]}? " if close else "") + helps
    if isinstance(e, ex.BadParameter):
        msg = e.format_message().rstrip(".")
        return msg[0].lower() + msg[1:] if msg else "invalid value", helps
    msg = e.format_message()
    return (msg[0].lower() + msg[1:].rstrip(".")) if msg else type(e).__name__, helps


def run(app: Any) -> int:
    """Run the Typer app; usage errors as one line and exit 2; the command's own exit code otherwise."""
    from dldoctor.errors import safe

    ex = _exceptions()
    try:
        rv = app(standalone_mode=False)
    except ex.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `dldoctor` or `dldoctor rules` alone: the help
            e.show()
            return 0
        if not isinstance(e, ex.UsageError):
            e.show()
            return e.exit_code
        line, hint = one_line(e)
        print(f"dldoctor: error: {safe(line)}", file=sys.stderr)
        print(f"  hint: {safe(hint)}", file=sys.stderr)
        return 2
    except ex.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


# -- parse-time checks of values ------------------------------------------------------------------------------------

def check_dtype(value: str | None) -> str | None:
    """--dtype: a dtype dldoctor knows, checked before anything loads."""
    if value is None:
        return value
    from dldoctor.collect.inputs import _DTYPES

    if value.lower() not in _DTYPES:
        raise typer.BadParameter(f"unknown dtype {value!r}: use one of {', '.join(sorted(_DTYPES))}")
    return value


def check_positive(value: float | None) -> float | None:
    """--timeout and other durations: a positive number of seconds."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g}: need a positive number of seconds")
    return value
