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
    optimizer: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
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
    progress: Any = None,
) -> Report:
    """Load a model as `inspect` does, run the training probe on a deep copy, and judge it with the rules.

    The report holds the model facts, `probe` (every statistic) and the findings of all selected
    rules (the TRN family reads the probe). Load and option errors raise DLDoctorError. Without `optimizer`, a
    model with attention is probed with AdamW at 1e-3, the others with Adam at 3e-3 (`collect.probe.probe_defaults`);
    `weight_decay` None is torch's default of the optimizer (AdamW 0.01, the others 0).
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
    if input_shapes is None and inputs is None and loaded.inputs:  # what config.json says the model takes
        from dldoctor.collect.inputs import spec_of

        input_shapes = [spec_of(i) for i in report.inputs]
    from dldoctor.collect.timing import busy, steady_threads

    crowded = device == "cpu" and busy()  # oversubscribed: N-thread kernels wait at every barrier (5x slower here)
    with steady_threads(crowded):
        report.probe = run_probe(loaded.module, inputs, loss=loss, optimizer=optimizer, lr=lr,
                                 weight_decay=weight_decay, steps=steps,
                                 batch_size=batch_size, seed=seed, device=device, data=data, input_shapes=input_shapes,
                                 dtype=dtype, attribution=attribution, progress=progress)
    if crowded:
        report.diag("info", "the machine was busy (load average above its cores): the probe trained on one thread, "
                    "which changes its figures by float rounding at most", "probe")
    if report.probe.error and report.probe.error.startswith("forward failed"):
        report.diag("error", f"the probe could not run the model: {report.probe.error}", "probe")
    judge(report, loaded.module, config, report.probe.config.get("loss"))
    return report


class Watch:
    """The probe's statistics inside a user's training loop (see `watch`).

    Under torch.distributed (`group`, default: the default process group, when it has more than one rank
    or the parameters are DTensors), every rank records, the statistics are those of the whole job and
    `report()` returns the Report on rank 0 and None on every other rank (`result` holds the same agreed
    statistics on every rank). `stopped` is None while the monitor runs; after a failure inside it, a
    dict {"step", "reason", "rank"}: it switched itself off there and the training went on.
    """

    def __init__(self, model: Any, optimizer: Any, every: int = 100, loss: str | None = None,
                 histograms: bool = True, config: Any = None, group: Any = None) -> None:
        from dldoctor.collect.probe import Recorder

        self.model, self.optimizer, self.config = model, optimizer, config
        self.recorder = Recorder(model, optimizer, every=every, histograms=histograms, guard=True,
                                 distributed=True, group=group)
        self.recorder.result.config = {"every": every, "optimizer": type(optimizer).__name__.lower(),
                                       "lr": optimizer.param_groups[0].get("lr") if optimizer.param_groups else None,
                                       "weight_decay": (optimizer.param_groups[0].get("weight_decay")
                                                        if optimizer.param_groups else None),
                                       "loss": loss, "data": "user training loop", "saturation": 5.0}
        if self.recorder.sync is not None:
            self.recorder.result.config["world_size"] = self.recorder.sync.world

    def __enter__(self) -> Watch:
        self.recorder.attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (also called on leaving the `with` block, even on an exception). No collective."""
        self.recorder.detach()

    def log_loss(self, value: Any) -> None:
        """Record this step's loss (a tensor or a number): the loss curve and NaN detection. Under
        torch.distributed, call it on every rank: a recorded step averages the losses logged since the last one."""
        self.recorder.log_loss(value)

    @property
    def result(self) -> Any:
        return self.recorder.result

    @property
    def rank(self) -> int:
        """This process's rank in the watched process group (0 without torch.distributed)."""
        return self.recorder.rank

    @property
    def stopped(self) -> dict[str, Any] | None:
        """None while the monitor runs; {"step", "reason", "rank"} once it switched itself off."""
        return self.recorder.stopped

    def report(self) -> Report | None:
        """A report with the recorded statistics and the findings of the rules; None on a rank other than 0
        under torch.distributed (no collective: call it on rank 0 alone or on every rank). A monitor that
        switched itself off leaves a warning diagnostic (where="watch") saying at which step and why."""
        if self.recorder.rank != 0:
            return None
        self.recorder.sync_layers()
        res = self.recorder.result
        rep = Report(model=ModelInfo(path=f"<{type(self.model).__name__}>", format="module",
                                     name=type(self.model).__name__))
        rep.probe = res
        judge(rep, None, self.config, res.config.get("loss"))
        stop = self.recorder.stopped
        if stop is not None:
            on = f" on rank {stop['rank']}" if self.recorder.sync is not None and stop.get("rank", -1) >= 0 else ""
            rep.diag("warning", f"the monitor switched itself off at step {stop['step']}{on}: {stop['reason']}; "
                                f"training went on, and the statistics cover the {len(res.steps)} recorded step(s) "
                                "before it", "watch")
        return rep


def watch(model: Any, optimizer: Any, every: int = 100, loss: str | None = None, histograms: bool = True,
          config: Any = None, group: Any = None) -> Watch:
    """Record the probe's statistics every `every`-th optimizer step of your own training loop.

    Hooks the optimizer's step (no call needed in the loop); forward hooks exist only during
    the forward pass of a sampled step. Use as a context manager; `log_loss(loss)` adds the
    loss curve. `report()` returns a Report judged by the rules, as `dldoctor probe` does.

    A monitor never kills the run it watches: an exception inside one of its hooks switches it off
    for the rest of the run (its hooks are removed, your loop goes on) and `report()` says at which
    step and why (KeyboardInterrupt and SystemExit pass through).

    Under torch.distributed (DDP, FSDP2's `fully_shard`, or a manual all-reduce), create it on every
    rank: on recorded steps the ranks sum their statistics over `group` (default: the default process
    group), so norms, activation statistics and the loss are those of the whole job; `report()`
    returns the Report on rank 0 and None on the other ranks. See docs/training-at-scale.md.
    """
    return Watch(model, optimizer, every=every, loss=loss, histograms=histograms, config=config, group=group)
