"""File helpers shared by every writer: which output paths are refused, the one atomic write (`write_atomic`), the
mode a finished file gets, and what to remove on a hard exit."""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from dldoctor.errors import DLDoctorError


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


def write_atomic(path: str, text: str) -> None:
    """Write next to the target, then rename: a reader never sees half a file. A link is followed (the file it
    leads to is replaced, the link stays). Commands check the path first with `check_output_path`."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    try:
        set_plain_mode(tmp, str(target))
        with in_progress(tmp), os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class OutputPathError(DLDoctorError):
    """An output path (-o, --write-baseline) that dldoctor refuses before any work starts."""


_OMIT_HINT = "omit -o to print the report to stdout, or give the path of a regular file"


def _kind_of(mode: int) -> str:
    return ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _writable(folder: str) -> str | None:
    """None when a file can be created in `folder` (tried: a read-only mount, a folder of /proc or a permission
    that root ignores all show up only when one tries), else the reason."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".dldoctor-probe-", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return None


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), kind: str = "file",
                      flag: str = "-o") -> None:
    """Refuse an output path before any work starts, with one line and a hint (OutputPathError, exit 2).

    Refused: a path that is (by any name, symbolic or hard link) one of `inputs`, the files the run reads (model
    files, --code files, --config...; entries that are not existing paths, such as factory specs, are ignored);
    something other than a regular file (a device such as /dev/null, a FIFO, a socket, a folder); a path under
    a file, or in a folder where no file can be created (missing folders are made when the output is written;
    the nearest existing one is tried). A link is followed: the file it leads to is what `write_atomic`
    replaces. `kind` "folder" is compress's output folder: created if missing, refused when it is a file or the
    folder that holds an input."""
    text = os.fspath(out)
    shown = f"{flag} {text}"
    if not text.strip():
        raise OutputPathError(f"{flag}: empty path", "give the path of the file to write")
    given = [os.fspath(i) for i in inputs if i is not None and os.path.exists(os.fspath(i))]
    for inp in given:
        if _same(text, inp):
            raise OutputPathError(f"{shown}: that is {inp}, which this run reads; dldoctor never writes over its inputs",
                                  "choose a new file name" if kind == "file" else "choose a new folder")
    real = os.path.realpath(text)
    if any(p == d or p.startswith(d + os.sep) for p in (os.path.abspath(text), real) for d in ("/dev", "/proc")):
        # /dev/stdout, /dev/fd/N, /proc/self/fd/N: a stream, not a file to replace (a rename would put a regular
        # file where the link was, or over whatever file the stream happens to be)
        raise OutputPathError(f"{shown}: is a device or a stream; dldoctor writes reports to regular files only",
                              _OMIT_HINT)
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as e:
        raise OutputPathError(f"{shown}: cannot use this path ({e.strerror or e})", "choose another path") from None
    if kind == "folder":
        if st is not None and not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else _kind_of(st.st_mode)
            raise OutputPathError(f"{shown}: is {what}, not a folder; compress writes its variants into a folder",
                                  "give a new or existing folder")
        for inp in given:
            if os.path.isfile(inp) and _same(os.path.dirname(os.path.abspath(inp)), real):
                raise OutputPathError(f"{shown}: would write beside or over the input {inp}", "choose a new folder")
        if st is not None:
            why = _writable(real)
            if why:
                raise OutputPathError(f"{shown}: cannot write in this folder ({why})", "choose a folder you can write to")
            return
    elif st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{shown}: is a folder", "give a file name, e.g. -o report.json")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{shown}: is {_kind_of(st.st_mode)}; dldoctor writes reports to regular files only",
                                  _OMIT_HINT)
    # missing folders are created when the output is written (after the work, so a refused or failed run leaves
    # none behind): the nearest one that exists must be a folder that can take a new entry
    parent = os.path.dirname(real)
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputPathError(f"{shown}: {parent} is a file, not a folder",
                              "choose a path in a folder (or a new folder under one)")
    why = _writable(parent)
    if why:
        raise OutputPathError(f"{shown}: cannot write in the folder {parent} ({why})",
                              "choose a folder you can write to, or omit -o to print to stdout")
