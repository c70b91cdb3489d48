"""What a loader returns. Loaders are the only code that reads model files."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dldoctor.report.types import TensorInfo


HASH_LIMIT = 4 * 2**30  # sha256 reads the whole file (~1.5 GB/s here): a 14 GB checkpoint would cost ~10 s


@dataclass
class LoadOptions:
    trust: bool = False  # the only door to unsafe loading (TorchScript, torch.export, arbitrary pickles)
    allow_classes: tuple[str, ...] = ()  # "pkg.mod.Cls" names the user allows in a pickle
    code: tuple[str, ...] = ()  # modules the user points to; their classes are allowed
    arch: str | None = None  # "pkg.mod:factory(args)" to build a module for a state_dict
    device: str = "cpu"  # "cpu" | "cuda" | "meta"
    hash_limit: int | None = HASH_LIMIT  # files larger than this get no sha256 (None: hash every file)
    limits: Any = None  # a load.limits.Limits from --limit NAME=VALUE; None: the defaults


@dataclass
class Loaded:
    source: str  # the path or factory spec as given
    format: str  # torch-module | state-dict | checkpoint | factory | onnx | torchscript | torch-export | safetensors
    sha256: str | None = None
    module: Any = None  # torch.nn.Module when we have one
    onnx_model: Any = None  # onnx.ModelProto for ONNX files
    tensors: list[TensorInfo] | None = None  # weights read without an architecture
    notes: list[str] = field(default_factory=list)  # what the report should tell the user
    archive: list[dict[str, Any]] | None = None  # safe listing of a zip archive (name, size) when not trusted
    name: str | None = None
    # example inputs the file itself suggests (a Hugging Face folder's config.json): (keyword or None for
    # positional, shape, dtype) each, used, marked assumed, when the user gives none; with where they came from
    inputs: list[tuple[str | None, list[int], str]] | None = None
    inputs_why: str | None = None
