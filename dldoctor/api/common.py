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


def at_batch_one(input_shapes: Any) -> list[Any] | None:
    """The shapes `inspect` describes the model at: each input's batch dimension set to 1 (named inputs and their
    own dtypes kept)."""
    from dldoctor.collect.inputs import normalize_shapes, with_batch

    shapes = normalize_shapes(input_shapes)
    return [with_batch(s, 1) for s in shapes] if shapes else None


@dataclass
class Prepared:
    """A model loaded for a run: the inspect report (facts at batch 1) and what was loaded."""

    report: Report
    loaded: Loaded

    def make_input(self, seed: int = 0) -> Callable[[int], tuple]:
        """`make_input(b)`: synthetic inputs like the report's, at batch size b (seeded per input; named inputs end
        the tuple as one Named dict: call the model with `collect.inputs.call_model`)."""
        from dldoctor.collect.inputs import from_infos

        infos, module = self.report.inputs, self.loaded.module

        def make(b: int) -> tuple:
            return from_infos(module, infos, seed=seed, batch=b)

        return make


def prepare(model_or_path: Any, *, action: str, input_shapes: Any = None, dtype: str | None = None,
            device: str = "cpu", load_options: Any = None, onnx: bool = True, need_input: str = "module") -> Prepared:
    """Load as `inspect` does (no training pass), and fail with one line when there is nothing `action` can run:
    weights without an architecture (or an ONNX graph, when `onnx` is False), or no example input (`need_input`:
    "module" asks one of a PyTorch module only, "always" of an ONNX graph too, "never" of neither)."""
    from dldoctor.api.inspect import inspect_loaded
    from dldoctor.collect.inputs import parse_dtype

    if dtype:
        parse_dtype(dtype)  # an unknown input dtype is a usage error here, before anything is loaded
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
    module = loaded.module
    if module is not None and any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        # saved from the meta device (or built there, too big for memory): shapes without values. inspect and
        # check count such a model; running it would allocate every weight from nothing
        raise InputSpecError(f"{report.model.path}: {action}, and this model's weights are on the meta device "
                             "(shapes without values)", "inspect and check describe it; to run it, save it with real "
                             "weights")
    if not report.inputs and (need_input == "always" or (need_input == "module" and loaded.module is not None)):
        raise InputSpecError(f"{report.model.path}: no example input", "pass --input-shape, e.g. 1,3,224,224")
