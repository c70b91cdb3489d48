"""Errors that reach the user as one line plus a hint, and exit code 2."""
from __future__ import annotations

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe(text: object) -> str:
    """`text` as one line of plain, visible characters: what a model file or a file name says is shown, never obeyed.

    Every character Python does not count as printable (C0 controls such as ESC, CR and LF, DEL, the C1 range,
    bidi overrides U+202A-U+202E and U+2066-U+2069, line separators, the surrogates of undecodable file names)
    becomes the escape Python's repr writes for it (`\\x1b`, `\\n`, `\\u202e`). Printable text, backslashes
    included, is unchanged, so ordinary names read as they are.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)


def quote(text: object) -> str:
    """A name read from a file, quoted and escaped (repr-style) for an error or hint line: `'os.system'`."""
    return repr(text if isinstance(text, str) else str(text))


class DLDoctorError(Exception):
    """An expected failure: bad input, refused file, failed forward. Never a traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, hint after a dash
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class LoadError(DLDoctorError):
    """The file or spec could not be opened as a model."""


class UnsafeModelError(LoadError):
    """The file wants code or globals outside the allowlist; nothing was executed."""

    def __init__(self, message: str, hint: str | None = None, globals_wanted: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.globals_wanted = list(globals_wanted or [])


class InputSpecError(DLDoctorError):
    """An --input-shape / --dtype / --device the model cannot take."""


class ConfigError(DLDoctorError):
    """A bad configuration file or option."""
