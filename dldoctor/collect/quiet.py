"""Silence what native code (Kineto, the TorchScript ONNX exporter) prints straight to file descriptors 1 and 2.

Python's contextlib.redirect_* only swap sys.stdout/sys.stderr; C++ writes to the descriptors
themselves, so they are pointed at /dev/null for the duration and restored afterwards.
"""
from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager
from typing import Iterator


@contextmanager
def native_quiet(fds: tuple[int, ...] = (1, 2)) -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    with ExitStack() as stack:
        for fd in fds:
            stack.enter_context(_silenced(fd))
        yield


@contextmanager
def _silenced(fd: int) -> Iterator[None]:
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)
