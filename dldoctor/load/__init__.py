"""Loaders: the only code that reads model files.

    load(source, opts) -> Loaded        a path or a factory spec ("pkg.mod:factory(args)")
    detect_format(path) -> str          the container format, from the file's bytes

Importing this package imports neither torch nor onnx; the loaders do, lazily.
Nothing is ever unpickled without a restricted unpickler unless opts.trust.
"""
from __future__ import annotations

import os

from dldoctor.errors import LoadError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.load.common import SUPPORTED_HINT, first_line, sha256_file, stem
from dldoctor.load.detect import (
    ONNX,
    PICKLE,
    SAFETENSORS,
    TORCH_EXPORT,
    TORCH_PICKLE,
    TORCHSCRIPT,
    detect_format,
    sniff,
)
from dldoctor.load.factory import is_spec, parse_spec
from dldoctor.load.pickle_scan import PickleScanError, pickle_globals

__all__ = [
    "FORMATS",
    "LoadOptions",
    "Loaded",
    "detect_format",
    "is_spec",
    "load",
    "parse_spec",
    "pickle_globals",
    "PickleScanError",
]

# Loaded.format values
FORMATS = (
    "torch-module",
    "state-dict",
    "checkpoint",
    "factory",
    "onnx",
    "torchscript",
    "torch-export",
    "safetensors",
    "hf-folder",  # a Hugging Face model folder (config.json + weights), see load/hf_folder.py
)

_DEVICES = ("cpu", "cuda", "meta")


def _map_location(opts: LoadOptions) -> str:
    return "cuda" if opts.device == "cuda" else "cpu"


def load(source: str, opts: LoadOptions | None = None) -> Loaded:
    """Open a model file or build a factory spec, without running code from the file.

    Raises LoadError (bad input) or UnsafeModelError (the file wants code; nothing ran).
    """
    opts = opts or LoadOptions()
    from dldoctor.load.limits import in_force

    with in_force(opts.limits):
        return _load(source, opts)


def _load(source: str, opts: LoadOptions) -> Loaded:
    if opts.device not in _DEVICES:
        raise LoadError(f"unknown device {opts.device!r}", hint="use --device cpu, cuda or meta")
    if is_spec(source):
        from dldoctor.load.factory import load_factory

        return load_factory(source, opts)

    try:
        from dldoctor.load.hf_folder import is_hf_folder

        if is_hf_folder(source):
            from dldoctor.load.hf_folder import load_hf_folder

            return load_hf_folder(source, opts)
        return _load_file(source, opts)
    except OSError as e:
        # a read that fails (EIO from a failing disk or network mount, a file removed or made unreadable mid-scan):
        # one line for this file; a folder scan goes on with the others
        why = e.strerror or first_line(e) or type(e).__name__
        raise LoadError(f"{source}: cannot read the file ({why})",
                        hint="check the disk or mount it lives on, and the file's permissions") from None


def _load_file(source: str, opts: LoadOptions) -> Loaded:
    path = source
    found = sniff(path)  # raises LoadError for missing files and folders
    size = os.path.getsize(path)
    digest = sha256_file(path) if opts.hash_limit is None or size <= opts.hash_limit else None
    kind = found.kind
    if kind == TORCH_PICKLE:
        from dldoctor.load.torch_pickle import load_torch_pickle

        loaded = load_torch_pickle(path, opts, legacy=not found.members, map_location=_map_location(opts))
    elif kind in (TORCHSCRIPT, TORCH_EXPORT):
        from dldoctor.load.archive import load_archive

        loaded = load_archive(path, kind, found.members, opts, _map_location(opts))
    elif kind == ONNX:
        from dldoctor.load.onnx_file import load_onnx

        loaded = load_onnx(path, opts)
    elif kind == SAFETENSORS:
        from dldoctor.load.safetensors_file import load_safetensors

        loaded = load_safetensors(path, opts)
    elif kind == PICKLE:
        from dldoctor.load.torch_pickle import load_plain_pickle

        loaded = load_plain_pickle(path, opts)  # always raises
    else:
        raise LoadError(f"{path}: not a model file dldoctor can read ({found.reason})", hint=SUPPORTED_HINT)
    loaded.source = source
    loaded.sha256 = digest
    if digest is None:
        loaded.notes.append(f"sha256 not computed: the file is {size / 2**30:.1f} GiB, over the "
                            f"{opts.hash_limit / 2**30:g} GiB limit (hashing reads every byte); --hash computes it. "
                            "Baselines match this file by its path")
    loaded.name = loaded.name or stem(path)
    return loaded
