"""The preamble every verb that runs a model shares (probe, profile, compress): the device check, the model
loaded as `inspect` loads it at batch size 1, the failure when there is nothing to run, and the input maker."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dldoctor.errors import InputSpecError
from dldoctor.load.base import Loaded
from dldoctor.report.types import Report


def check_device(device: str, allowed: tuple[str, ...] = ("cpu", "cuda"), why: str = "") -> None:
    """An unknown device, or CUDA where there is none, is a usage error before anything is loaded."""
    if device not in allowed:
        raise InputSpecError(f"unknown device {device!r}", (why + ": " if why else "") + f"use {' or '.join(allowed)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputSpecError("--device cuda asked for, but CUDA is not available here", "use --device cpu")


def at_batch_one(input_shapes: list[list[int]] | None) -> list[list[int]] | None:
    """The shapes `inspect` describes the model at: each input's batch dimension set to 1."""
    return [[1, *s[1:]] for s in input_shapes] if input_shapes else None


@dataclass
class Prepared:
    """A model loaded for a run: the inspect report (facts at batch 1) and what was loaded."""

    report: Report
    loaded: Loaded

    def make_input(self, seed: int = 0) -> Callable[[int], tuple]:
        """`make_input(b)`: synthetic inputs like the report's, at batch size b (seeded per input)."""
        from dldoctor.collect.inputs import make_inputs

        infos, module = self.report.inputs, self.loaded.module

        def make(b: int) -> tuple:
            out: list[Any] = []
            for i, info in enumerate(infos):
                t, _, _ = make_inputs(module, [[b, *info.shape[1:]]], info.dtype, seed=seed + i)
                out.extend(t)
            return tuple(out)

        return make


def prepare(model_or_path: Any, *, action: str, input_shapes: list[list[int]] | None = None, dtype: str | None = None,
            device: str = "cpu", load_options: Any = None, onnx: bool = True, need_input: str = "module") -> Prepared:
    """Load as `inspect` does (no training pass), and fail with one line when there is nothing `action` can run:
    weights without an architecture (or an ONNX graph, when `onnx` is False), or no example input (`need_input`:
    "module" asks one of a PyTorch module only, "always" of an ONNX graph too, "never" of neither)."""
    from dldoctor.api.inspect import inspect_loaded

    report, loaded = inspect_loaded(model_or_path, None, input_shapes=at_batch_one(input_shapes), dtype=dtype,
                                    device=device, training=False, load_options=load_options)
    require(report, loaded, action, onnx=onnx, need_input=need_input)
    return Prepared(report, loaded)


def require(report: Report, loaded: Loaded, action: str, *, onnx: bool = True, need_input: str = "module") -> None:
    """One line when there is nothing `action` can run (see `prepare`)."""
    if loaded.module is None and (loaded.onnx_model is None or not onnx):
        what = "an ONNX graph" if loaded.onnx_model is not None else "weights without an architecture"
        want = "a full module, a factory spec" + (", an ONNX file" if onnx else "") + ", or a state_dict with --arch"
        raise InputSpecError(f"{report.model.path}: {action}, and this file holds {what}", f"give {want}")
    if not report.inputs and (need_input == "always" or (need_input == "module" and loaded.module is not None)):
        raise InputSpecError(f"{report.model.path}: no example input", "pass --input-shape, e.g. 1,3,224,224")
