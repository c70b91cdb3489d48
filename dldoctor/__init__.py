"""dldoctor: a doctor for deep-learning models.

The public API is imported lazily so that `dldoctor --help` never pays for torch.
"""
from __future__ import annotations

from typing import Any

from dldoctor._version import __version__
from dldoctor.load.base import LoadOptions
from dldoctor.types import Finding, LayerInfo, Report, Severity

__all__ = ["__version__", "inspect", "check", "LoadOptions", "Report", "Finding", "LayerInfo", "Severity"]


def inspect(model_or_path: Any, inputs: Any = None, **options: Any) -> Report:
    """Inspect a torch module, a model file or a `pkg.mod:factory` spec; return a Report."""
    from dldoctor.inspector import inspect as _inspect

    return _inspect(model_or_path, inputs=inputs, **options)


def check(model_or_path: Any, config: Any = None, inputs: Any = None, **options: Any) -> Report:
    """Inspect and judge a model with the rules; the Report's `findings` are filled.

    `config` is a `dldoctor.config.Config`, a path to a pyproject.toml / dldoctor.toml, or None
    for the defaults (every rule). Options as for `inspect`, plus `loss` and `dataset_size`.
    """
    from dldoctor.checker import check_model
    from dldoctor.config import Config, load_config

    if config is not None and not isinstance(config, Config):
        config = load_config(".", config)
    return check_model(model_or_path, config, inputs=inputs, **options).report
