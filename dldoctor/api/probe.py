"""`dldoctor probe` and `dldoctor.watch`: the training probe as an API, judged by the rules.

    report = dldoctor.probe("model.pt", loss="ce", steps=60)          # a short run on a deep copy
    with dldoctor.watch(model, optimizer) as w:                       # every 100th step of your own loop
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward(); optimizer.step(); optimizer.zero_grad()
            w.log_loss(loss)                                          # optional: the loss curve
    print(w.report().findings)
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from dldoctor.api.judge import judge
from dldoctor.errors import InputSpecError, LoadError
from dldoctor.report.types import ModelInfo, Report


def resolve_data(spec: str) -> Callable[[], Iterable[Any]]:
    """`pkg.mod:batches` (or `batches(n=4)`): a callable returning an iterable of (x, y) batches."""
    from dldoctor.load.factory import import_module, parse_spec, resolve_attr

    modname, attr, args, kwargs = parse_spec(spec)
    fn = resolve_attr(import_module(modname, f"--data {spec}"), attr, f"--data {spec}", modname)
    if not callable(fn):
        raise LoadError(f"--data {spec}: '{modname}:{attr}' is not callable",
                        hint="point to a function that returns an iterable of (x, y) batches")
    return lambda: fn(*args, **kwargs)


def probe(
    model_or_path: Any,
    *,
    loss: str | None = None,
    optimizer: str = "adam",
    lr: float | None = None,
    steps: int = 60,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    data: Callable[[], Iterable[Any]] | str | None = None,
    inputs: Any = None,
    input_shapes: list[list[int]] | None = None,
    dtype: str | None = None,
    load_options: Any = None,
    config: Any = None,
    attribution: bool = True,
) -> Report:
    """Load a model as `inspect` does, run the training probe on a deep copy, and judge it with the rules.

    The report holds the model facts, `probe` (every statistic) and the findings of all selected
    rules (the TRN family reads the probe). Load and option errors raise DLDoctorError.
    """
    from dldoctor.api.common import prepare
    from dldoctor.report.facts import normalise_loss
    from dldoctor.collect.probe import run_probe

    loss = normalise_loss(loss)
    if isinstance(data, str):
        data = resolve_data(data)
    run = prepare(model_or_path, action="the probe trains a PyTorch module", input_shapes=input_shapes, dtype=dtype,
                  device=device, load_options=load_options, onnx=False, need_input="never")
    report, loaded = run.report, run.loaded
    report.probe = run_probe(loaded.module, inputs, loss=loss, optimizer=optimizer, lr=lr, steps=steps,
                             batch_size=batch_size, seed=seed, device=device, data=data, input_shapes=input_shapes,
                             dtype=dtype, attribution=attribution)
    if report.probe.error and report.probe.error.startswith("forward failed"):
        report.diag("error", f"the probe could not run the model: {report.probe.error}", "probe")
    judge(report, loaded.module, config, report.probe.config.get("loss"))
    return report


class Watch:
    """The probe's statistics inside a user's training loop (see `watch`)."""

    def __init__(self, model: Any, optimizer: Any, every: int = 100, loss: str | None = None,
                 histograms: bool = True, config: Any = None) -> None:
        from dldoctor.collect.probe import Recorder

        self.model, self.optimizer, self.config = model, optimizer, config
        self.recorder = Recorder(model, optimizer, every=every, histograms=histograms)
        self.recorder.result.config = {"every": every, "optimizer": type(optimizer).__name__.lower(),
                                       "lr": optimizer.param_groups[0].get("lr") if optimizer.param_groups else None,
                                       "loss": loss, "data": "user training loop", "saturation": 5.0}

    def __enter__(self) -> Watch:
        self.recorder.attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (also called on leaving the `with` block, even on an exception)."""
        self.recorder.detach()

    def log_loss(self, value: Any) -> None:
        """Record this step's loss (a tensor or a number): the loss curve and NaN detection."""
        self.recorder.log_loss(value)

    @property
    def result(self) -> Any:
        return self.recorder.result

    def report(self) -> Report:
        """A report with the recorded statistics and the findings of the rules."""
        self.recorder.sync_layers()
        res = self.recorder.result
        rep = Report(model=ModelInfo(path=f"<{type(self.model).__name__}>", format="module",
                                     name=type(self.model).__name__))
        rep.probe = res
        judge(rep, None, self.config, res.config.get("loss"))
        return rep


def watch(model: Any, optimizer: Any, every: int = 100, loss: str | None = None, histograms: bool = True,
          config: Any = None) -> Watch:
    """Record the probe's statistics every `every`-th optimizer step of your own training loop.

    Hooks the optimizer's step (no call needed in the loop); forward hooks exist only during
    the forward pass of a sampled step. Use as a context manager; `log_loss(loss)` adds the
    loss curve. `report()` returns a Report judged by the rules, as `dldoctor probe` does.
    """
    return Watch(model, optimizer, every=every, loss=loss, histograms=histograms, config=config)
