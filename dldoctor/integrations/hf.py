"""`DLDoctorCallback` for the Hugging Face `transformers.Trainer`: dldoctor.watch over `trainer.train()`.

    from dldoctor.integrations.hf import DLDoctorCallback
    cb = DLDoctorCallback(every=100, fail_on="error")
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()            # raises TrainingFindingsError at the end if an error-level finding exists
    cb.report.findings         # on rank 0

The model is the trainer's own (`kwargs["model"]`, the module under any DDP wrapper) and the optimizer the torch
optimizer inside accelerate's wrapper (`kwargs["optimizer"]`), taken at `on_train_begin`, or at the first
`on_step_begin` / `on_optimizer_step` when a trainer creates it later. The loss comes from `on_log`
(`logs["loss"]`, so one point per `logging_steps`). At `on_train_end` the findings go to the transformers logger
(rank 0 only) and their counts into `state.log_history`; with `fail_on` set, every process raises
TrainingFindingsError there, after the trainer has logged its own end-of-training metrics.

The Trainer calls no callback when `train()` raises: use the callback as a context manager (or call `close()`)
to remove the hooks in that case; the next `on_train_begin` also removes any left behind.
"""
from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from dldoctor.integrations.common import (Session, SessionView, TrainingFindingsError, counts, level,
                                          unwrap_optimizer)

# under the "transformers" logger: its verbosity, handler and per-process level (the Trainer quiets replicas) apply
logger = hf_logging.get_logger("transformers.dldoctor")

__all__ = ["DLDoctorCallback", "TrainingFindingsError"]


class DLDoctorCallback(SessionView, TrainerCallback):
    """Record dldoctor's training statistics during `Trainer.train()` and judge them at the end.

    every: record every `every`-th optimizer step (1 = every step). fail_on: "error", "warning" or None: raise
    TrainingFindingsError at the end of training when findings at that severity or above exist. histograms:
    record value histograms. config: a dldoctor Config or path, as for `dldoctor.check`. loss: the loss kind
    for the rules that need it (e.g. "ce"), None when unknown.
    """

    def __init__(self, every: int = 100, fail_on: str | None = "error", histograms: bool = True, config: Any = None,
                 loss: str | None = None) -> None:
        self.session = Session(every, fail_on, histograms, config, loss, logger)

    # -- the trainer's events ------------------------------------------------------------------------
    def _try_start(self, kwargs: dict[str, Any]) -> None:
        if self.session.started:
            return
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            return  # the optimizer is created later by this trainer: the next event tries again
        self.session.start(model, unwrap_optimizer(optimizer))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.reset()  # a watch left open by a train() that raised
        self._try_start(kwargs)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._try_start(kwargs)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._try_start(kwargs)  # last chance: from the next step on

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.session.log_loss(logs["loss"])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        is_zero = bool(state.is_world_process_zero)
        lines, failure, bad = self.session.finish(is_zero)
        rep = self.session.report
        if is_zero and rep is not None:
            for line in lines:
                logger.log(level(rep), line)
            state.log_history.append({**counts(rep), "step": state.global_step})
        if failure:
            raise TrainingFindingsError(failure, report=rep, findings=bad)

    # -- outside the trainer ---------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the hooks (after a `train()` that raised; the normal end does it by itself)."""
        self.session.close()

    def __enter__(self) -> DLDoctorCallback:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
