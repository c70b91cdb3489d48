"""dldoctor: a doctor for deep-learning models.

The public API is imported lazily so that `dldoctor --help` never pays for torch.
"""
from __future__ import annotations

import sys as _sys

if _sys.argv[:1] == ["-m"] and _sys.path and not _sys.flags.safe_path:
    # `python -m dldoctor`: Python put the working folder first on sys.path, and this package is imported before
    # __main__ runs. Take it off before the first import below, or a typing.py / dataclasses.py lying there (a
    # downloaded model repository, say) is run in place of the standard library (__main__.py says more).
    import os as _os  # already loaded by Python's start-up: not looked up on sys.path

    try:
        if _sys.path[0] in ("", _os.getcwd()):
            del _sys.path[0]
    except OSError:
        pass

from typing import Any

from dldoctor._version import __version__
from dldoctor.load.base import LoadOptions
from dldoctor.report.types import Finding, LayerInfo, Report, Severity

__all__ = ["__version__", "inspect", "check", "probe", "watch", "profile", "LoadOptions", "Report", "Finding", "LayerInfo", "Severity"]


def inspect(model_or_path: Any, inputs: Any = None, **options: Any) -> Report:
    """Inspect a torch module, a model file or a `pkg.mod:factory` spec; return a Report."""
    from dldoctor.api.inspect import inspect as _inspect

    return _inspect(model_or_path, inputs=inputs, **options)


def check(model_or_path: Any, config: Any = None, inputs: Any = None, **options: Any) -> Report:
    """Inspect and judge a model with the rules; the Report's `findings` are filled.

    `config` is a `dldoctor.rules.config.Config`, a path to a pyproject.toml / dldoctor.toml, or None
    for the defaults (every rule). Options as for `inspect`, plus `loss` and `dataset_size`.
    """
    from dldoctor.api.check import check_model
    from dldoctor.rules.config import Config, load_config

    if config is not None and not isinstance(config, Config):
        config = load_config(".", config)
    return check_model(model_or_path, config, inputs=inputs, **options).report


def probe(model_or_path: Any, **options: Any) -> Report:
    """Run the training probe on a deep copy of a module, file or factory spec; the Report's `probe` and
    `findings` are filled. Options: loss, optimizer, lr, steps, batch_size, seed, device, data, inputs,
    input_shapes, dtype, load_options, config, attribution (see `dldoctor.api.probe.probe`)."""
    from dldoctor.api.probe import probe as _probe

    return _probe(model_or_path, **options)


def watch(model: Any, optimizer: Any, every: int = 100, **options: Any) -> Any:
    """Record the probe's statistics every `every`-th optimizer step of your own training loop
    (a context manager; see `dldoctor.api.probe.watch`)."""
    from dldoctor.api.probe import watch as _watch

    return _watch(model, optimizer, every=every, **options)


def profile(model_or_path: Any, **options: Any) -> Report:
    """Measure a module, file or factory spec (latency, throughput, memory, breakdown, what-ifs); the Report's
    `profile` and `findings` are filled. Options: device, batch_sizes, dtype (the inputs'), precision (the model's:
    fp32, fp16 or bf16), threads, warmup, iters, input_shapes, load_options, config, whatifs, breakdown (see
    `dldoctor.api.profile.profile`)."""
    from dldoctor.api.profile import profile as _profile

    return _profile(model_or_path, **options)
