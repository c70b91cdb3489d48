"""Trainer callbacks: `dldoctor.watch` inside a training framework's own loop (docs/integrations.md).

- `dldoctor.integrations.hf.DLDoctorCallback`: Hugging Face `transformers.Trainer` (needs transformers, accelerate)
- `dldoctor.integrations.lightning.DLDoctorCallback`: Lightning (`lightning.pytorch` or `pytorch_lightning`)

`pip install "dldoctor[train]"` installs all three. This package imports neither framework; each module imports
its own. Both callbacks raise `TrainingFindingsError` at the end of training when `fail_on` says so.
"""
from __future__ import annotations

from dldoctor.integrations.common import TrainingFindingsError

__all__ = ["TrainingFindingsError"]
