"""`DLDoctorCallback` for Lightning (`lightning.pytorch`, or `pytorch_lightning` when only that is installed).

    from dldoctor.integrations.lightning import DLDoctorCallback
    cb = DLDoctorCallback(every=100, fail_on="error")
    trainer = L.Trainer(max_epochs=3, callbacks=[cb])
    trainer.fit(module, datamodule)   # raises TrainingFindingsError at the end if an error-level finding exists
    cb.report.findings                # on rank 0

The model is the LightningModule, the optimizer the first of `trainer.optimizers` (the torch optimizer, not its
LightningOptimizer wrapper), both taken at `on_train_start`. Lightning runs forward and backward inside
`optimizer.step(closure)`, after the optimizer's own pre-step hooks: the watch's "before the step" therefore runs
at `on_before_optimizer_step` (after backward, before the update), and its "after the step" is the optimizer's
post-step hook. The loss is `outputs["loss"]` (or the tensor `training_step` returned) at `on_train_batch_end`.
At `on_train_end` the findings go to the log (rank 0 only) and their counts to the trainer's loggers; with
`fail_on` set, every process raises TrainingFindingsError there. `on_exception` removes the hooks when training
fails for any other reason.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Callable

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    from pytorch_lightning import Callback  # type: ignore[no-redef]

from dldoctor.integrations.common import (Session, SessionView, TrainingFindingsError, counts, level,
                                          unwrap_optimizer)

# under Lightning's own logger: its handler and level apply
logger = logging.getLogger("lightning.pytorch.callbacks.dldoctor")

__all__ = ["DLDoctorCallback", "TrainingFindingsError"]


class _Handle:
    def __init__(self, hooks: dict[int, Callable], key: int) -> None:
        self.hooks, self.key = hooks, key

    def remove(self) -> None:
        self.hooks.pop(self.key, None)


class _StepPoints:
    """The optimizer as the watch sees it: everything is the optimizer's, except that its pre-step hooks run when
    the callback calls `before_step()` (at `on_before_optimizer_step`), once per step however many times an
    optimizer such as LBFGS evaluates the closure."""

    def __init__(self, optimizer: Any) -> None:
        self._opt = optimizer
        self._pre: dict[int, Callable] = {}
        self._fired = False
        self._next = 0

    def __getattr__(self, name: str) -> Any:
        if name == "_opt":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._opt, name)

    def register_step_pre_hook(self, hook: Callable) -> _Handle:
        self._next += 1
        self._pre[self._next] = hook
        return _Handle(self._pre, self._next)

    def register_step_post_hook(self, hook: Callable) -> Any:
        def post(*args: Any) -> None:
            self._fired = False
            hook(*args)

        return self._opt.register_step_post_hook(post)

    def before_step(self) -> None:
        if self._fired:
            return
        self._fired = True
        for hook in list(self._pre.values()):
            hook(self._opt, (), {})


_POINTS: dict[type, type] = {}


def _points(optimizer: Any) -> _StepPoints:
    """A `_StepPoints` whose class carries the optimizer's name (the report names the optimizer by its type)."""
    kind = type(optimizer)
    if kind not in _POINTS:
        _POINTS[kind] = type(kind.__name__, (_StepPoints,), {"__module__": __name__})
    return _POINTS[kind](optimizer)


class DLDoctorCallback(SessionView, Callback):
    """Record dldoctor's training statistics during `Trainer.fit()` and judge them at the end of training.

    every: record every `every`-th optimizer step (1 = every step). fail_on: "error", "warning" or None: raise
    TrainingFindingsError at the end of training when findings at that severity or above exist. histograms:
    record value histograms. config: a dldoctor Config or path, as for `dldoctor.check`. loss: the loss kind
    for the rules that need it (e.g. "ce"), None when unknown.
    """

    def __init__(self, every: int = 100, fail_on: str | None = "error", histograms: bool = True, config: Any = None,
                 loss: str | None = None) -> None:
        super().__init__()
        self.session = Session(every, fail_on, histograms, config, loss, logger)
        self._points: _StepPoints | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.session.reset()
        self._points = None
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        if not optimizers:
            if trainer.is_global_zero:
                logger.warning("dldoctor: the trainer has no optimizer; nothing is watched")
            return
        self._points = _points(unwrap_optimizer(optimizers[0]))
        self.session.start(pl_module, self._points)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._points is not None:
            self._points._fired = False  # a step that loss scaling skipped had no post-step hook

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self._points is not None and unwrap_optimizer(optimizer) is self._points._opt:
            self._points.before_step()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if isinstance(outputs, Mapping):
            outputs = outputs.get("loss")
        self.session.log_loss(outputs)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        is_zero = bool(trainer.is_global_zero)
        lines, failure, bad = self.session.finish(is_zero)
        self._points = None
        rep = self.session.report
        if is_zero and rep is not None:
            for line in lines:
                logger.log(level(rep), line)
            for lg in getattr(trainer, "loggers", None) or []:
                try:
                    lg.log_metrics(counts(rep), step=trainer.global_step)
                except Exception as e:  # noqa: BLE001 - a logger that refuses does not fail the run
                    logger.warning("dldoctor: %s did not take the finding counts: %s", type(lg).__name__, e)
        if failure:
            raise TrainingFindingsError(failure, report=rep, findings=bad)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.session.reset()
        self._points = None

    def close(self) -> None:
        """Remove the hooks (the end of training and `on_exception` do it by themselves)."""
        self.session.reset()
