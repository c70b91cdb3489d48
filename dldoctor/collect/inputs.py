"""Example inputs: the user's shapes, or a sensible guess from the first layer, marked assumed."""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable, Iterator

import torch

from dldoctor.errors import DLDoctorError, InputSpecError
from dldoctor.report.types import InputInfo

# Synthetic inputs are real tensors: a shape the user typed, or one an ONNX graph declares (1x3x30000x30000 is 10 GB
# of float32), is checked against this budget before anything is allocated. `dldoctor ... --max-input-bytes`
# sets it for one run (`input_budget`); None switches the check off.
DEFAULT_MAX_INPUT_BYTES = 1 << 30
_MAX_INPUT_BYTES: ContextVar[int | None] = ContextVar("dldoctor_max_input_bytes", default=DEFAULT_MAX_INPUT_BYTES)


class InputBudgetError(DLDoctorError):
    """Synthetic inputs that would take more memory than --max-input-bytes allows (nothing was allocated).
    Not an InputSpecError: inspect turns those into a warning and goes on, and this must stop the run."""


@contextmanager
def input_budget(max_bytes: int | None) -> Iterator[None]:
    """Inputs made inside this block may take at most `max_bytes` together (None: no limit)."""
    token = _MAX_INPUT_BYTES.set(max_bytes)
    try:
        yield
    finally:
        _MAX_INPUT_BYTES.reset(token)


def max_input_bytes() -> int | None:
    return _MAX_INPUT_BYTES.get()


def _human(n: int) -> str:
    for div, suf in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {suf}"
    return f"{n} B"


def check_input_bytes(inputs: Iterable[tuple[str, list[int], str, int]]) -> None:
    """Raise InputBudgetError before allocating inputs, given as (name, shape, dtype name, bytes per element), that
    would take more than the budget together. The line names the largest input, its shape and bytes, and the flag."""
    limit = _MAX_INPUT_BYTES.get()
    if limit is None:
        return
    rows = [(name, list(shape), dt, math.prod(max(int(d), 0) for d in shape) * int(size))
            for name, shape, dt, size in inputs]
    total = sum(r[3] for r in rows)
    if total <= limit:
        return
    name, shape, dt, n = max(rows, key=lambda r: r[3])
    dims = "x".join(str(d) for d in shape) or "scalar"
    also = f"; {len(rows)} inputs together {_human(total)}" if len(rows) > 1 else ""
    raise InputBudgetError(
        f"{name} of shape {dims} ({dt}) would take {_human(n)} ({n:,} bytes){also}, over the --max-input-bytes "
        f"budget of {_human(limit)}; nothing was allocated",
        f"give a smaller --input-shape, or raise the budget if the machine has the memory "
        f"(e.g. --max-input-bytes {max(2, math.ceil(total * 1.25 / 2**30))}GiB)",
    )

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "uint8": torch.uint8, "bool": torch.bool,
}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise InputSpecError(f"unknown dtype {name!r}", f"use one of: {', '.join(sorted(_DTYPES))}") from None


def parse_shape(text: str) -> list[int]:
    try:
        dims = [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    except ValueError:
        raise InputSpecError(f"bad input shape {text!r}", "write it as comma-separated sizes, e.g. 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputSpecError(f"bad input shape {text!r}", "every size must be a positive integer, e.g. 1,3,224,224")
    return dims


def _first_layer(module: torch.nn.Module) -> torch.nn.Module | None:
    nn = torch.nn
    wanted = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.EmbeddingBag, nn.RNNBase,
              nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.MultiheadAttention, nn.Bilinear)
    for m in module.modules():
        if isinstance(m, wanted):
            return m
    return None


def guess_shape(module: torch.nn.Module, batch: int = 1) -> tuple[list[int], torch.dtype, str]:
    """A shape and dtype the model should accept, with a word on why."""
    nn = torch.nn
    m = _first_layer(module)
    if isinstance(m, nn.modules.conv._ConvNd):
        c = m.in_channels
        nd = len(m.kernel_size)
        spatial = {1: [256], 2: [224, 224], 3: [16, 112, 112]}[nd]
        return [batch, c, *spatial], torch.float32, f"first layer {type(m).__name__}({c} channels)"
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return [batch, 128], torch.int64, f"first layer {type(m).__name__}: 128 token ids"
    if isinstance(m, nn.Linear):
        return [batch, m.in_features], torch.float32, f"first layer Linear({m.in_features})"
    if isinstance(m, nn.Bilinear):
        return [batch, m.in1_features], torch.float32, "first layer Bilinear"
    if isinstance(m, nn.RNNBase):
        shape = [batch, 32, m.input_size] if m.batch_first else [32, batch, m.input_size]
        return shape, torch.float32, f"first layer {type(m).__name__}: 32 steps"
    if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        d = m.linear1.in_features
        bf = getattr(m.self_attn, "batch_first", False)
        return ([batch, 128, d] if bf else [128, batch, d]), torch.float32, "first layer a transformer layer: 128 tokens"
    if isinstance(m, nn.MultiheadAttention):
        shape = [batch, 128, m.embed_dim] if m.batch_first else [128, batch, m.embed_dim]
        return shape, torch.float32, "first layer MultiheadAttention: 128 tokens"
    raise InputSpecError(
        "cannot guess an example input for this model (no conv, linear, embedding or recurrent layer found)",
        "pass --input-shape, e.g. --input-shape 1,3,224,224",
    )


def make_inputs(
    module: torch.nn.Module | None,
    shapes: list[list[int]] | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[tuple[torch.Tensor, ...], list[InputInfo], str | None]:
    """Tensors to run the model with, their descriptions, and why they were assumed (or None)."""
    why = None
    if shapes:
        dt = parse_dtype(dtype) if dtype else None
        if dt is None:
            first = _first_layer(module) if module is not None else None
            dt = torch.int64 if isinstance(first, (torch.nn.Embedding, torch.nn.EmbeddingBag)) else torch.float32
        specs = [(s, dt) for s in shapes]
        assumed = False
    else:
        s, dt, why = guess_shape(module)
        if dtype:
            dt = parse_dtype(dtype)
        specs = [(s, dt)]
        assumed = True
    check_input_bytes((f"input {i + 1}" if len(specs) > 1 else "the input", shape, str(dt).replace("torch.", ""),
                       torch.empty((), dtype=dt).element_size()) for i, (shape, dt) in enumerate(specs))
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    infos = []
    for shape, dt in specs:
        if dt.is_floating_point:
            t = torch.randn(shape, generator=gen).to(dt)
        elif dt == torch.bool:
            t = torch.zeros(shape, dtype=torch.bool)
        else:
            high = 2
            first = _first_layer(module) if module is not None else None
            if isinstance(first, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
                high = first.num_embeddings
            t = torch.randint(0, high, shape, generator=gen, dtype=dt)
        if device not in ("cpu", "meta"):
            t = t.to(device)
        tensors.append(t)
        infos.append(InputInfo(shape=list(shape), dtype=str(dt).replace("torch.", ""), assumed=assumed))
    return tuple(tensors), infos, why


def from_infos(module: torch.nn.Module | None, infos: list[InputInfo], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Rebuild example tensors from a report's input descriptions (each with its own dtype)."""
    out = []
    for i, info in enumerate(infos):
        t, _, _ = make_inputs(module, [info.shape], info.dtype, seed=seed + i)
        out.extend(t)
    return tuple(out)
