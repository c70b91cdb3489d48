"""A live phase line on stderr for the long verbs (profile, probe), as `compress` shows its steps.

Only on a terminal: piped or captured stderr gets nothing. The callback has compress's signature,
`progress(text, done, total)`; native libraries' lines are kept off the display where they are run
(collect/quiet.py).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

Callback = Callable[[str, int, int], None]


@contextlib.contextmanager
def phases(err: Any, label: str) -> Iterator[Callback | None]:
    """A rich Progress on `err` (a stderr Console) yielding `progress(text, done, total)`, or None off a terminal."""
    if not err.is_terminal or err.quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import logging

    # torch's own log handler holds the real stderr, past rich's redirect: its one-line notices (the best known,
    # "No CUDA runtime is found" on importing torch.utils.cpp_extension) would tear the live line
    noisy = logging.getLogger("torch.utils.cpp_extension")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=err, transient=True) as bar:
            task = bar.add_task("loading", total=None)

            def progress(text: str, done: int, total: int) -> None:
                bar.update(task, description=text, completed=done, total=total)

            yield progress
    finally:
        noisy.setLevel(level)
