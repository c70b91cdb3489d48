"""`dldoctor.inspect()`: load, collect facts, return a Report. The CLI is a thin layer over this."""
from __future__ import annotations

import os
from typing import Any

import torch

from dldoctor.collect.memory import OPTIMIZERS
from dldoctor.collect.torch_model import inspect_module, weights_only
from dldoctor.errors import InputSpecError
from dldoctor.load.base import Loaded, LoadOptions
from dldoctor.report.llm_types import STRATEGIES, PlanOptions
from dldoctor.report.types import ModelInfo, Report


def inspect(model_or_path: Any, inputs: Any = None, **options: Any) -> Report:
    """Inspect a module, a model file or a `pkg.mod:factory` spec.

    `inputs` (a tensor, a tuple of tensors, a dict of keyword inputs {"input_ids": t, ...}, or a tuple whose last
    element is such a dict) or `input_shapes` (shapes, "input_ids=1,128:int64" strings, InputSpecs, or a dict
    {name: shape}) fix the example input; the model is called as `model(*positional, **named)`. Without them one
    is guessed from the first layer and marked assumed. `loss` (ce, mse,
    bce_logits, ...) makes the training-step pass backpropagate that loss instead of a sum.
    Options: input_shapes, dtype, device, depth, optimizer, training, receptive_field,
    load_options, loss, plan (a `PlanOptions`: context, batch_size, gpus, strategy, lora_rank and kv_dtype of
    the memory plan of a decoder; see `inspect_loaded`).
    """
    return inspect_loaded(model_or_path, inputs, **options)[0]


def inspect_loaded(
    model_or_path: Any,
    inputs: Any = None,
    *,
    input_shapes: Any = None,
    dtype: str | None = None,
    device: str = "cpu",
    depth: int | None = None,
    optimizer: str = "adam",
    training: bool = True,
    receptive_field: bool = True,
    load_options: LoadOptions | None = None,
    loss: str | None = None,
    batch_sizes: list[int] | None = None,
    plan: PlanOptions | None = None,
) -> tuple[Report, Loaded]:
    """`inspect`, also handing back what was loaded: the rules' collectors need the module."""
    if optimizer not in OPTIMIZERS:
        raise InputSpecError(f"unknown optimizer {optimizer!r}", f"use one of: {', '.join(OPTIMIZERS)}")
    if device not in ("cpu", "cuda", "meta"):
        raise InputSpecError(f"unknown device {device!r}", "use cpu, cuda or meta")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputSpecError("--device cuda asked for, but CUDA is not available here", "use --device cpu or meta")
    from dldoctor.collect.inputs import normalize_shapes, shape_of

    input_shapes = normalize_shapes(input_shapes)
    check_plan_options(plan)
    loaded = _load(model_or_path, load_options, device)
    report = Report(model=ModelInfo(path=loaded.source, format=loaded.format, sha256=loaded.sha256, name=loaded.name))
    for note in loaded.notes:
        report.diag("info", note)
    if loaded.onnx_model is not None:
        from dldoctor.collect.onnx import inspect_onnx

        inspect_onnx(loaded.onnx_model, report,  # ONNX graph inputs are filled in order (names are not matched)
                     input_shapes=[shape_of(s) for s in input_shapes] if input_shapes else None)
        report.device = "onnx"
        return report, loaded
    if loaded.module is None:
        weights_only(report, loaded)
        return report, loaded
    from dldoctor.collect.inputs import InputSpec
    from dldoctor.report.facts import normalise_loss

    assumed = None
    if inputs is None and not input_shapes and loaded.inputs:  # the file says what it takes (config.json)
        input_shapes = [InputSpec(tuple(shape), dt, name) for name, shape, dt in loaded.inputs]
        assumed = loaded.inputs_why
    inspect_module(report, loaded.module, inputs, input_shapes, dtype, device, depth, optimizer, training,
                    receptive_field, normalise_loss(loss), batch_sizes=batch_sizes, plan=plan, assumed=assumed)
    return report, loaded


def check_plan_options(plan: PlanOptions | None) -> None:
    """A usage error for a memory-plan option out of range, before anything loads."""
    if plan is None:
        return
    from dldoctor.collect.llm_plan import DTYPE_BYTES, dtype_name

    for name, v in (("context", plan.context), ("batch_size", plan.batch_size)):
        if v is not None and v < 1:
            raise InputSpecError(f"--{name.replace('_', '-')} {v}: need a positive integer", f"e.g. --{name.replace('_', '-')} 4096")
    if plan.gpus < 1:
        raise InputSpecError(f"--gpus {plan.gpus}: need a positive integer", "e.g. --gpus 8")
    if plan.lora_rank < 1:
        raise InputSpecError(f"--lora-rank {plan.lora_rank}: need a positive integer", "e.g. --lora-rank 16")
    if plan.strategy not in STRATEGIES:
        raise InputSpecError(f"unknown --strategy {plan.strategy!r}", f"use one of: {', '.join(STRATEGIES)}")
    if plan.kv_dtype is not None and dtype_name(plan.kv_dtype) is None:
        raise InputSpecError(f"unknown --kv-dtype {plan.kv_dtype!r}", f"use one of: {', '.join(DTYPE_BYTES)}, fp16, bf16, fp8")


def _load(model_or_path: Any, opts: LoadOptions | None, device: str) -> Loaded:
    if isinstance(model_or_path, torch.nn.Module):
        return Loaded(source=f"<{type(model_or_path).__name__}>", format="module", module=model_or_path,
                      name=type(model_or_path).__name__)
    if type(model_or_path).__name__ == "ModelProto":
        return Loaded(source="<onnx.ModelProto>", format="onnx", onnx_model=model_or_path, name="onnx")
    from dldoctor.load import load

    opts = opts or LoadOptions()
    if opts.device != device:
        opts = LoadOptions(**{**opts.__dict__, "device": device})
    return load(os.fspath(model_or_path), opts)


