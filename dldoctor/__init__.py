"""dldoctor: a doctor for deep-learning models.

The public API is imported lazily so that `dldoctor --help` never pays for torch.
"""
from __future__ import annotations

from typing import Any

from dldoctor._version import __version__
from dldoctor.load.base import LoadOptions
from dldoctor.types import Finding, LayerInfo, Report, Severity

__all__ = ["__version__", "inspect", "LoadOptions", "Report", "Finding", "LayerInfo", "Severity"]


def inspect(model_or_path: Any, inputs: Any = None, **options: Any) -> Report:
    """Inspect a torch module, a model file or a `pkg.mod:factory` spec; return a Report."""
    from dldoctor.inspector import inspect as _inspect

    return _inspect(model_or_path, inputs=inputs, **options)
