"""What every command shares: error handling, output writing, option types."""
from __future__ import annotations

import functools
import os
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import typer

from dldoctor.errors import DLDoctorError, safe
from dldoctor.fileops import remove_in_progress, write_atomic

def debug() -> bool:
    return os.environ.get("DLDOCTOR_DEBUG", "") not in ("", "0")


def error_line(message: str, hint: str | None = None, prefix: str = "error") -> None:
    """`dldoctor: error: message` (and `  hint: ...`) on stderr, each exactly one line: whatever a file put into
    the message (names with newlines, ESC sequences, bidi overrides) is shown escaped, never obeyed."""
    text = f"dldoctor: {prefix}: {safe(message)}"
    if hint:
        text += f"\n  hint: {safe(hint)}"
    typer.echo(text, err=True)


def fail(message: str, hint: str | None = None, code: int = 2) -> None:
    """One line on stderr, a hint, and the exit code. Never a traceback unless DLDOCTOR_DEBUG=1."""
    error_line(message, hint)
    raise typer.Exit(code)


class Deadline(BaseException):
    """Raised by `deadline` when a command runs past --timeout. A BaseException, like KeyboardInterrupt, so
    that no `except Exception` on the way (a failing forward is normally recorded, not raised) swallows it."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Stop the command after `seconds` (main thread, Unix): a hanging forward ends the run with exit 2.
    Every hook and mode is removed by the `finally` blocks the exception unwinds through."""
    if not seconds:
        yield
        return
    if seconds <= 0:
        fail(f"--timeout {seconds:g}: need a positive number of seconds", "e.g. --timeout 120")
    import signal

    def ring(signum: int, frame: Any) -> None:
        raise Deadline(seconds)

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    done = threading.Event()
    threading.Thread(target=_watchdog, args=(seconds, done), name="dldoctor-timeout", daemon=True).start()
    try:
        yield
    finally:
        done.set()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


NATIVE_GRACE_S = 5.0  # after --timeout, how long Python gets to take the alarm and unwind before the hard exit


def _watchdog(seconds: float, done: threading.Event) -> None:
    """SIGALRM reaches Python code only between bytecodes: a forward stuck inside one native kernel (a C++ loop,
    a deadlocked collective, a blocking read) never sees it. If the run has not ended `NATIVE_GRACE_S` after the
    deadline, end the process from this thread: one line, exit 2, and the files it was writing removed. Nothing
    of the user's is lost: inputs are never written, outputs only appear through an atomic rename."""
    if done.wait(seconds + NATIVE_GRACE_S):
        return
    remove_in_progress()
    text = (f"dldoctor: error: stopped after --timeout {seconds:g} s: the model is stuck inside native code "
            "(a kernel or C extension that never returned)\n  hint: raise --timeout, or look at the model's forward\n")
    try:
        if sys.stderr.isatty():
            text = "\x1b[?25h" + text  # the spinner hid the cursor; give it back
        sys.stderr.write(text)
        sys.stderr.flush()
    finally:
        os._exit(2)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DLDoctorError as e:
            if debug():
                traceback.print_exc()
            fail(e.message, e.hint, e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", None, 130)
        except Deadline as e:
            fail(f"stopped after --timeout {e.args[0]:g} s: the model hangs or is too slow for that budget",
                 "raise --timeout, or look at the model's forward (a loop that never ends?)")
        except Exception as e:  # noqa: BLE001 - the user gets one line; DLDOCTOR_DEBUG=1 shows the rest
            if debug():
                traceback.print_exc()
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            fail(f"internal error: {type(e).__name__}: {first}", "re-run with DLDOCTOR_DEBUG=1 and report the traceback")

    return wrapper


def emit(text: str, output: str | None) -> None:
    if output:
        write_atomic(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def check_format(kind: str, fmt: str, hint: str | None = None) -> None:
    """A usage error (one line, exit 2) unless the render table has a `fmt` renderer for this kind of result."""
    from dldoctor.render import formats

    if fmt not in formats(kind):
        fail(f"unknown format {fmt!r}", hint or f"use one of: {', '.join(formats(kind))}")


def emit_rendered(kind: str, fmt: str, result: Any, output: str | None, *, width: int = 140, **opts: Any) -> None:
    """Render a result through the table (`dldoctor.render.render`) to `output` (atomically) or stdout. Rich output
    for the terminal is printed by Rich itself; written to a file, it is the plain text of a `width`-column one."""
    from dldoctor.render import render

    from dldoctor.render import TERMINAL_FORMATS

    if fmt in TERMINAL_FORMATS and not output:
        from rich.console import Console

        render(kind, fmt, result, console=Console(), **opts)
    else:
        emit(render(kind, fmt, result, width=width, **opts), output)


def report_skipped(reports: Any, fmt: str, output: str | None, *, show: bool = False, quiet: bool = False) -> None:
    """The rules the run skipped. The terminal output leaves them out; by default one line on stderr counts them
    (`12 rules skipped: 5 need a loss (--loss), ... — --show-skipped lists them`; not with --quiet, nor under a
    machine-readable format, whose document holds them). With --show-skipped, each group on its own line: on
    stdout after a terminal report, else on stderr (a JSON or SARIF stdout stays one document)."""
    from dldoctor.render import TERMINAL_FORMATS, skipped_lines, skipped_summary

    reports = list(reports)
    terminal = fmt in TERMINAL_FORMATS
    if show:
        lines = skipped_lines(reports)
        if not lines:
            return
        text = "".join(f"{safe(line)}\n" for line in lines)
        if terminal and not output:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            sys.stderr.write(text)
        return
    if quiet or not terminal:
        return
    line = skipped_summary(reports)
    if line:
        typer.echo(safe(line), err=True)  # a note, not an error: no `dldoctor:` prefix


def emit_report_and_exit(kind: str, rep: Any, fmt: str, output: str | None, config: Any, *, width: int = 140,
                         show_skipped: bool = False, quiet: bool = False, **opts: Any) -> None:
    """Write one probe/profile report as json, html or rich text (to stdout or `output`, atomically), say what
    rules were skipped (`report_skipped`), then exit: 2 when the model could not be run, 1 when a finding reaches
    the config's fail-on."""
    emit_rendered(kind, fmt, rep, output, width=width, **opts)
    report_skipped([rep], fmt, output, show=show_skipped, quiet=quiet)
    errors = [d.message for d in rep.diagnostics if d.level == "error"]
    if errors:
        for line in errors:
            error_line(line)
        raise typer.Exit(2)
    if any(config.fails(f.severity) for f in rep.findings):
        raise typer.Exit(1)
