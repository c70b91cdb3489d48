"""What the trainer callbacks share: one `dldoctor.watch` per training run, its loss curve, and the verdict at the end.

A trainer callback (hf.py, lightning.py) only translates its trainer's events into the calls of `Session`:
`start(model, optimizer)` when training begins, `log_loss(value)` when the trainer has a loss, `close()` when
training stops for any reason, and `finish(is_zero)` at the normal end, which returns the lines to log and the
message of the failure (`fail_on`), the same on every process of a distributed run.
"""
from __future__ import annotations

import logging
from typing import Any

from dldoctor.errors import DLDoctorError, safe

FAIL_ON = ("error", "warning", None)
_AT_OR_ABOVE = {"error": ("error",), "warning": ("error", "warning"), None: ()}
MAX_LISTED = 20  # finding lines in the log; the report holds them all


class TrainingFindingsError(DLDoctorError):
    """The run is failed on purpose: dldoctor found problems at the `fail_on` severity or above.

    `report` is the judged Report (None on the processes other than rank 0 of a distributed run), `findings`
    the findings that failed the run.
    """

    exit_code = 1

    def __init__(self, message: str, report: Any = None, findings: list[Any] | None = None) -> None:
        super().__init__(message, hint="the callback's .report has every finding; fail_on=None lets the run finish")
        self.report = report
        self.findings = list(findings or [])


def check_options(every: int, fail_on: str | None) -> None:
    """Refuse bad options when the callback is made, not minutes into training."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise DLDoctorError(f"every={every!r}: the sampling interval must be a whole number of steps, at least 1",
                            hint="use every=1 (every step) or more")
    if fail_on not in FAIL_ON:
        raise DLDoctorError(f"fail_on={fail_on!r} is not a severity", hint="use 'error', 'warning' or None")


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a trainer's wrapper (accelerate's AcceleratedOptimizer, Lightning's
    LightningOptimizer keep it as `.optimizer`): its step is the one that runs, and its hooks the ones that fire."""
    import torch

    seen = 0
    while not isinstance(getattr(optimizer, "_optimizer_step_pre_hooks", None), dict) and seen < 8:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer, seen = inner, seen + 1
    return optimizer


def world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) outside a distributed run."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover - a half-initialised process group: behave as one process
        pass
    return 0, 1


def from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` on every process (the verdict must be the same everywhere, or the ranks that go on
    wait forever for the one that stopped)."""
    rank, size = world()
    if size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def summary(report: Any) -> list[str]:
    """The lines a trainer's log gets: one count line, then one line per finding (worst first)."""
    order = {"error": 0, "warning": 1, "info": 2}
    findings = sorted(report.findings, key=lambda f: order.get(f.severity, 3))
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    steps = len(report.probe.steps) if report.probe is not None else 0
    head = (f"dldoctor: {len(findings)} finding(s) ({counts['error']} error, {counts['warning']} warning, "
            f"{counts['info']} info) from {steps} sampled step(s)")
    lines = [head]
    for f in findings[:MAX_LISTED]:
        where = f" at {safe(f.location)}" if f.location else ""
        lines.append(f"dldoctor: {f.severity} {f.code} {f.name}{where}: {safe(f.message)}"
                     + (f" (fix: {safe(f.fix)})" if f.fix else ""))
    if len(findings) > MAX_LISTED:
        lines.append(f"dldoctor: ... and {len(findings) - MAX_LISTED} more in the callback's .report")
    for d in getattr(report, "diagnostics", None) or []:  # e.g. a monitor that switched itself off, and why
        if d.level in ("error", "warning"):
            lines.append(f"dldoctor: note ({d.level}): {safe(d.message)}")
    return lines


def level(report: Any) -> int:
    """WARNING when a finding is a warning or an error (trainers show those by default), else INFO."""
    loud = any(f.severity in ("error", "warning") for f in report.findings)
    loud = loud or any(d.level in ("error", "warning") for d in getattr(report, "diagnostics", None) or [])
    return logging.WARNING if loud else logging.INFO


def counts(report: Any) -> dict[str, int]:
    """Finding counts by severity, as metrics (`dldoctor/errors`, `dldoctor/warnings`, `dldoctor/infos`)."""
    return {f"dldoctor/{s}s": sum(f.severity == s for f in report.findings) for s in ("error", "warning", "info")}


class SessionView:
    """What both trainer callbacks show of their Session: the report and the options."""

    session: Session

    @property
    def report(self) -> Any:
        """The judged Report after training (rank 0; None before the end and on the other processes)."""
        return self.session.report

    @property
    def every(self) -> int:
        return self.session.every

    @property
    def fail_on(self) -> str | None:
        return self.session.fail_on


class Session:
    """One watched training run (see the module docstring)."""

    def __init__(self, every: int, fail_on: str | None, histograms: bool, config: Any, loss: str | None,
                 log: logging.Logger) -> None:
        check_options(every, fail_on)
        self.every, self.fail_on, self.histograms, self.config, self.loss = every, fail_on, histograms, config, loss
        self.log = log
        self.watch: Any = None
        self.report: Any = None
        self.gave_up = False  # `start` failed: no second try in this run
        self._loss_failed = False

    @property
    def started(self) -> bool:
        """A watch runs, or starting one failed (then it is not tried again until the next run)."""
        return self.watch is not None or self.gave_up

    def start(self, model: Any, optimizer: Any) -> None:
        """Begin watching `model` trained by `optimizer` (a previous run's watch, left open by an exception, is
        closed first)."""
        from dldoctor.api.probe import watch

        self.reset()
        self.report = None
        self._loss_failed = False
        try:
            w = watch(model, optimizer, every=self.every, loss=self.loss, histograms=self.histograms,
                      config=self.config)
            w.__enter__()
        except Exception as e:  # noqa: BLE001 - the diagnosis never stops the training
            self.log.warning("dldoctor: could not start watching the training (%s); it goes on unwatched", safe(e))
            self.gave_up = True
            return
        self.watch = w

    def log_loss(self, value: Any) -> None:
        """Record a loss; a value the recorder cannot read is skipped (logged once): the diagnosis never stops
        the training."""
        if self.watch is None or value is None:
            return
        try:
            self.watch.log_loss(value)
        except Exception as e:  # noqa: BLE001 - never kill training for a statistic
            if not self._loss_failed:
                self._loss_failed = True
                self.log.warning("dldoctor: the loss %r could not be recorded (%s); the loss curve is left out",
                                 type(value).__name__, safe(e))

    def close(self) -> None:
        """Remove every hook; safe to call more than once and after an exception."""
        if self.watch is not None:
            try:
                self.watch.close()
            except Exception as e:  # noqa: BLE001
                self.log.warning("dldoctor: removing the hooks failed: %s", safe(e))

    def reset(self) -> None:
        """Close and forget the watch (a run that ended without `finish`); the next run may start one."""
        self.close()
        self.watch = None
        self.gave_up = False

    def finish(self, is_zero: bool) -> tuple[list[str], str | None, list[Any]]:
        """Close, judge, and decide. Every process of a distributed run calls it at the same point.

        Returns (the lines to log: on rank 0 only, the failure message or None, the findings that fail the run).
        `self.report` is the Report on rank 0 and None elsewhere.
        """
        rep = None
        if self.watch is not None:  # else: nothing watched here, but the verdict below is still shared
            self.close()
            try:
                rep = self.watch.report()
            except Exception as e:  # noqa: BLE001 - a diagnosis that failed is reported, not raised into training
                self.log.warning("dldoctor: the report could not be made: %s", safe(e))
        self.watch = None
        self.gave_up = False
        self.report = rep if is_zero else None
        lines = summary(rep) if (is_zero and rep is not None) else []
        bad = [f for f in rep.findings if f.severity in _AT_OR_ABOVE[self.fail_on]] if (is_zero and rep) else []
        bad.sort(key=lambda f: f.severity != "error")  # the message names the worst first
        msg = None
        if bad:
            first = bad[0]
            where = f" at {safe(first.location)}" if first.location else ""
            msg = (f"dldoctor failed the training run (fail_on={self.fail_on!r}): {len(bad)} finding(s) at "
                   f"{self.fail_on} severity or above; first: {first.code} {first.name}{where}: {safe(first.message)}")
        try:
            msg = from_rank_zero(msg)
        except Exception as e:  # noqa: BLE001 - keep the local verdict rather than hang or crash
            self.log.warning("dldoctor: could not share rank 0's verdict with the other processes: %s", safe(e))
        return lines, msg, bad
