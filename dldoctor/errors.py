"""Errors that reach the user as one line plus a hint, and exit code 2."""
from __future__ import annotations


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
