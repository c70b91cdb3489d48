"""Many files in one run (`dldoctor check` and `dldoctor inspect` over files and folders): the folder scan
(`expand`), the loop over the files that keeps one file's failure from hiding the others' reports (`check_files`,
`inspect_files`, both filling a `Batch`), and the worker processes `check --jobs N --timeout S` runs them in.

The loop takes no display: the caller passes `around(src)`, a context manager entered for each file (a progress
line, a deadline), and reads the Batch afterwards. Each worker is a long-lived process (torch is imported once per worker, not per file) that checks
one file at a time and sends back the report as plain data. A worker that crashes (segfault, out
of memory) or runs past the timeout on a file is killed and replaced; that file is reported as an
error and the others go on. Models are released after every file, so memory stays bounded.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Sequence

from dldoctor.errors import DLDoctorError, LoadError



# Files a folder scan picks up; a file named on the command line is always tried, whatever its name.
MODEL_SUFFIXES = {".pt", ".pth", ".pkl", ".bin", ".ckpt", ".onnx", ".safetensors", ".pt2", ".tar", ".torchscript", ".jit"}


def expand(sources: list[str], problems: list[str] | None = None, *, exclude: Sequence[str] | None = None,
           root: str | None = None) -> list[str]:
    """Folders become the model files inside them (sorted, recursive); everything else passes through. An entry
    named like a model that is not a regular file (a FIFO, a socket, a device, a link to nothing) is kept: loading
    it gives one error line for that entry, and the other files are still read. A folder named like a model is
    searched like any other folder. A Hugging Face model folder (config.json beside its weights, or a hub cache
    entry models--org--name/, see load/hf_folder.py), given or found, is one model: its shards are not listed one
    by one. A file that an ONNX model of the scan names as its external data (`weights.bin` beside `model.onnx`)
    is that model's data, not a model. A folder that cannot be listed is one line in `problems` (when given)
    instead of being passed over in silence; a folder with no model file in it at all raises LoadError.

    `exclude` are ruff-style globs (`[tool.dldoctor] exclude` and `extend-exclude`, `--exclude`,
    `--extend-exclude`; default DEFAULT_EXCLUDE, the hidden entries): a glob without a `/` matches the name of any
    file or folder met in the scan (`*.ckpt`, `old_runs`), one with a `/` the path relative to `root` (the
    configuration's folder, else the current one) or to the folder given (`legacy/*.pt`). An excluded folder is not
    entered. A path named on the command line is always taken, excluded or not."""
    from dldoctor.load.hf_folder import is_hf_folder
    from dldoctor.rules.config import DEFAULT_EXCLUDE

    globs = tuple(DEFAULT_EXCLUDE if exclude is None else exclude)
    base = os.path.abspath(root or os.getcwd())
    out: list[str] = []
    for s in sources:
        if not os.path.isdir(s) or is_hf_folder(s):  # a Hugging Face folder is one model, not its shards
            out.append(s)
            continue
        found: list[str] = []
        unlisted: list[str] = []
        skipped = 0

        def note(e: OSError) -> None:
            unlisted.append(f"{e.filename or s}: cannot list this folder ({e.strerror or e})")

        def excluded(folder: str, name: str) -> bool:
            return is_excluded(os.path.join(folder, name), name, globs, (base, os.path.abspath(s)))

        for folder, dirs, files in os.walk(s, onerror=note):  # links to folders are not followed
            dirs[:] = [d for d in dirs if not excluded(folder, d)]
            hf = [d for d in dirs if is_hf_folder(os.path.join(folder, d))]
            found.extend(os.path.normpath(os.path.join(folder, d)) for d in hf)
            dirs[:] = [d for d in dirs if d not in hf]
            for name in files:
                if os.path.splitext(name)[1].lower() not in MODEL_SUFFIXES:
                    continue
                if excluded(folder, name):
                    skipped += 1
                else:
                    found.append(os.path.normpath(os.path.join(folder, name)))
        found = _without_external_data(found)
        if not found:
            if unlisted:
                raise LoadError(unlisted[0], "check the folder's permissions")
            if skipped:
                raise LoadError(f"{s}: no model files in this folder ({skipped} excluded by the exclude globs)",
                                "see `exclude` / `extend-exclude` in the configuration, --exclude, --extend-exclude")
            raise LoadError(f"{s}: no model files in this folder",
                            f"dldoctor looks for {', '.join(sorted(MODEL_SUFFIXES))}")
        if problems is not None:
            problems.extend(unlisted)
        out.extend(sorted(found))
    return out


def is_excluded(path: str, name: str, globs: Sequence[str], roots: Sequence[str] = ()) -> bool:
    """Does one of the ruff-style `globs` exclude this scanned entry? (see `expand`)"""
    from fnmatch import fnmatchcase

    rels = []
    for r in roots:
        try:
            rel = os.path.relpath(os.path.abspath(path), r)
        except ValueError:  # another drive
            continue
        if not rel.startswith(".."):
            rels.append(rel.replace(os.sep, "/"))
    for g in globs:
        g = g.strip()
        if not g:
            continue
        if "/" not in g.rstrip("/"):
            if fnmatchcase(name, g.rstrip("/")):
                return True
        elif any(fnmatchcase(rel, g.strip("/").removeprefix("./")) for rel in rels):
            return True
    return False


def _without_external_data(found: list[str]) -> list[str]:
    """Drop the files that an ONNX model among `found` names as its external data (read only when some file
    beside an .onnx could be one: a folder of plain .onnx files costs nothing)."""
    models = [p for p in found if p.lower().endswith(".onnx") and os.path.isfile(p)]
    others = [p for p in found if not p.lower().endswith(".onnx")]
    if not models or not others:
        return found
    from dldoctor.load.onnx_file import external_data_files

    data: set[str] = set()
    for m in models:
        folder = os.path.dirname(os.path.abspath(m))
        if any(os.path.abspath(o).startswith(folder + os.sep) for o in others):
            data |= external_data_files(m)
    if not data:
        return found
    return [p for p in found if os.path.normpath(os.path.abspath(p)) not in data]



@dataclass
class Batch:
    """What a run over many files gathered: the reports (in the order of the sources) and one line per failure (a
    folder that could not be listed, a file that did not load or crashed, an error diagnostic, a rule that failed);
    any failure fails the run."""

    reports: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unloaded: int = 0  # files that gave no report
    failed: int = 0  # files that gave no report, or a report with an error diagnostic
    rule_errors: int = 0
    tracebacks: list[str] = field(default_factory=list)  # of the internal errors, for DLDOCTOR_DEBUG

    def add_report(self, src: str, report: Any, rule_errors: Sequence[tuple[str, str]] = ()) -> None:
        self.reports.append(report)
        broken = [f"{src}: {d.message}" for d in report.diagnostics if d.level == "error"]
        self.failed += bool(broken)
        self.failures.extend(broken)
        self.failures.extend(f"{src}: rule {c} failed: {m}" for c, m in rule_errors)
        self.rule_errors += len(rule_errors)

    def add_failure(self, src: str, message: str) -> None:
        """A file that gave no report; its message is prefixed with the file once (a load error often names it)."""
        self.failures.append(message if message.startswith(src) else f"{src}: {message}")
        self.unloaded += 1
        self.failed += 1

    def add_result(self, result: tuple) -> None:
        """A worker's result for one file (see `check_many`), filed as `run_files` files its own."""
        from dldoctor.report.types import Report

        kind, src, payload, extra = result
        if kind == "ok":
            self.add_report(src, Report.from_dict(payload), extra)
            return
        if kind == "internal-error" and extra:
            self.tracebacks.append(extra)
        self.add_failure(src, f"internal error: {payload}" if kind == "internal-error" else payload)


Around = Callable[[str], AbstractContextManager]


def run_files(sources: Sequence[str], one: Callable[[str], tuple[Any, Sequence[tuple[str, str]]]], *,
              problems: Iterable[str] = (), around: Around | None = None, keep_going: bool = True,
              catch_internal: bool = True) -> Batch:
    """Call `one(src) -> (report, rule_errors)` for each source in this process, in order, inside `around(src)`.
    A DLDoctorError is that file's failure line (raised instead when not `keep_going`); any other exception is an
    "internal error" line for that file (raised instead when not `catch_internal`), so one model's crash does not
    hide the others' results. `problems` (lines from `expand`) come first."""
    batch = Batch(failures=list(problems))
    for src in sources:
        with around(src) if around is not None else nullcontext():
            try:
                report, rule_errors = one(src)
            except DLDoctorError as e:
                if not keep_going:
                    raise
                batch.add_failure(src, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - one model's crash must not hide the others' results
                if not catch_internal:
                    raise
                batch.tracebacks.append(traceback.format_exc())
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                batch.add_failure(src, f"internal error: {type(e).__name__}: {first}")
                continue
        batch.add_report(src, report, rule_errors)
    return batch


def in_workers(jobs: int, timeout: float | None) -> bool:
    """`check_files` runs the files in worker processes with --jobs above 1, and with any --timeout (a file past
    it is killed with its worker)."""
    return jobs > 1 or timeout is not None


def check_files(sources: Sequence[str], config: Any, *, jobs: int = 1, timeout: float | None = None,
                max_input_bytes: int | None = None, problems: Iterable[str] = (), around: Around | None = None,
                **check_kwargs: Any) -> Batch:
    """`api.check.check_model(src, config, **check_kwargs)` for each source: in this process (inside `around(src)`),
    or in `jobs` worker processes when `in_workers(jobs, timeout)` (`around` is not used then). Every file's
    failure is a line of the Batch, never an exception. `max_input_bytes` is --max-input-bytes (default 1 GiB)."""
    if in_workers(jobs, timeout):
        batch = Batch(failures=list(problems))
        check_many(sources, config, check_kwargs, jobs, timeout, batch.add_result, max_input_bytes=max_input_bytes)
        order = {s: i for i, s in enumerate(sources)}
        batch.reports.sort(key=lambda r: order.get(r.model.path, len(order)))
        return batch
    from dldoctor.api.check import check_model
    from dldoctor.collect.inputs import DEFAULT_MAX_INPUT_BYTES, input_budget

    budget = DEFAULT_MAX_INPUT_BYTES if max_input_bytes is None else max_input_bytes

    def one(src: str) -> tuple[Any, Sequence[tuple[str, str]]]:
        with input_budget(budget):
            res = check_model(src, config, **check_kwargs)
        return res.report, res.rules.errors

    return run_files(sources, one, problems=problems, around=around)


def inspect_files(sources: Sequence[str], config: Any = None, *, max_input_bytes: int | None = None,
                  problems: Iterable[str] = (), around: Around | None = None, **inspect_kwargs: Any) -> Batch:
    """`api.inspect.inspect` for each source, or `api.check.check_model` when a rules `config` is given (its rule
    errors are not counted: inspect's findings never fail the run). A load error is that file's failure line when
    there are several files, and raised when there is one; any other exception is raised."""
    from dldoctor.api.check import check_model
    from dldoctor.api.inspect import inspect
    from dldoctor.collect.inputs import DEFAULT_MAX_INPUT_BYTES, input_budget

    budget = DEFAULT_MAX_INPUT_BYTES if max_input_bytes is None else max_input_bytes

    def one(src: str) -> tuple[Any, Sequence[tuple[str, str]]]:
        with input_budget(budget):
            if config is None:
                return inspect(src, **inspect_kwargs), ()
            return check_model(src, config, **inspect_kwargs).report, ()

    return run_files(sources, one, problems=problems, around=around, keep_going=len(sources) > 1,
                     catch_internal=False)


def _worker(conn: Connection, config: Any, kwargs: dict, threads: int, max_input_bytes: int | None = None) -> None:
    import torch  # imported before "ready": a file's timeout never pays for the import

    # N workers with torch's default of one thread per core would oversubscribe the cores N times
    # (measured: 2 workers on 2 cores took 1.6x longer than 1 worker); share them out instead
    torch.set_num_threads(threads)

    from dldoctor.api.check import check_model
    from dldoctor.collect.inputs import DEFAULT_MAX_INPUT_BYTES, input_budget
    from dldoctor.errors import DLDoctorError

    conn.send(("ready",))
    while True:
        try:
            src = conn.recv()
        except EOFError:
            return
        if src is None:
            return
        try:
            with input_budget(DEFAULT_MAX_INPUT_BYTES if max_input_bytes is None else max_input_bytes):
                res = check_model(src, config, **kwargs)
            out = ("ok", src, res.report.to_dict(), list(res.rules.errors))
        except DLDoctorError as e:
            out = ("load-error", src, str(e), None)
        except Exception as e:  # noqa: BLE001 - reported for this file; the worker goes on
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out = ("internal-error", src, f"{type(e).__name__}: {first}", traceback.format_exc())
        conn.send(out)


class _Slot:
    def __init__(self, ctx: Any, config: Any, kwargs: dict, threads: int, max_input_bytes: int | None = None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, config, kwargs, threads, max_input_bytes), daemon=True)
        self.proc.start()
        child.close()
        self.src: str | None = None
        self.started = 0.0

    def ready(self, seconds: float = 300.0) -> None:
        """Wait until the worker has imported torch and dldoctor (not counted against any file's timeout)."""
        if not self.conn.poll(seconds):
            raise RuntimeError(f"a worker process did not start within {seconds:g} s")
        self.conn.recv()

    def give(self, src: str) -> None:
        self.src, self.started = src, time.monotonic()
        self.conn.send(src)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def check_many(sources: Iterable[str], config: Any, kwargs: dict, jobs: int, timeout: float | None,
               on_result: Callable[[tuple], None], max_input_bytes: int | None = None) -> None:
    """Check `sources` in `jobs` worker processes; call `on_result(result)` in the parent for each file:
    ("ok", src, report_dict, rule_errors) | ("load-error" | "internal-error" | "timeout" | "crash", src, message, _).
    `max_input_bytes` is the workers' --max-input-bytes (default 1 GiB)."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited torch threads or CUDA state
    todo = list(sources)
    n = max(1, min(jobs, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // n)
    slots = [_Slot(ctx, config, kwargs, threads, max_input_bytes) for _ in range(n)]
    try:
        for s in slots:
            s.ready()
            if todo:
                s.give(todo.pop(0))
        while any(s.src is not None for s in slots):
            busy = [s for s in slots if s.src is not None]
            wait_for = None
            if timeout:
                wait_for = max(0.0, min(s.started + timeout for s in busy) - time.monotonic())
            ready = wait([s.conn for s in busy], timeout=wait_for)
            for s in busy:
                result = None
                if s.conn in ready:
                    try:
                        result = s.conn.recv()
                    except (EOFError, OSError):  # the worker died mid-file
                        code = s.proc.exitcode if not s.proc.is_alive() else None
                        result = ("crash", s.src, f"the worker checking this file died (exit code {code})", None)
                elif timeout and time.monotonic() - s.started >= timeout:
                    result = ("timeout", s.src, f"no result within --timeout {timeout:g} s (the model hangs or is too "
                              "slow): skipped", None)
                if result is None:
                    continue
                on_result(result)
                if result[0] in ("crash", "timeout"):
                    s.kill()
                    fresh = _Slot(ctx, config, kwargs, threads, max_input_bytes)
                    slots[slots.index(s)] = fresh
                    s = fresh
                    s.ready()
                s.src = None
                if todo:
                    s.give(todo.pop(0))
    finally:
        for s in slots:
            s.stop()
