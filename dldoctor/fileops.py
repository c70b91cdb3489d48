"""File helpers shared by every writer: the mode a finished file gets."""
from __future__ import annotations

import os


def set_plain_mode(tmp: str, target: str) -> None:
    """mkstemp makes 0600 files; give `tmp` the mode `target` has now, or the one a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o666 & ~umask
    os.chmod(tmp, mode)
