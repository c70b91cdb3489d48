"""File helpers shared by every writer: the mode a finished file gets, and what to remove on a hard exit."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


def set_plain_mode(tmp: str, target: str) -> None:
    """mkstemp makes 0600 files; give `tmp` the mode `target` has now, or the one a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o666 & ~umask
    os.chmod(tmp, mode)


# Paths a run is writing (temporary files, work folders, an output folder it created). Normal unwinding removes
# them in `finally` blocks; a hard exit (the --timeout watchdog, when native code never hands control back to
# Python) cannot run those, so it removes what is listed here before it ends the process.
_IN_PROGRESS: set[str] = set()


@contextlib.contextmanager
def in_progress(path: str) -> Iterator[str]:
    _IN_PROGRESS.add(str(path))
    try:
        yield str(path)
    finally:
        _IN_PROGRESS.discard(str(path))


def remove_in_progress() -> None:
    for p in sorted(_IN_PROGRESS, key=len, reverse=True):  # files before the folders that hold them
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass
    _IN_PROGRESS.clear()


@contextlib.contextmanager
def temp_dir(prefix: str = "dldoctor-") -> Iterator[str]:
    """A temporary folder, removed on the way out and on a hard exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d, in_progress(d):
        yield d
