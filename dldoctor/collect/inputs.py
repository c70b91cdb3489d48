"""Example inputs: the user's shapes, or a sensible guess from the first layer, marked assumed."""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence, Union

import torch
from torch.utils._pytree import register_pytree_node

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
        return _DTYPES[name.strip().lower()]
    except KeyError:
        raise InputSpecError(f"unknown dtype {name!r}", f"use one of: {', '.join(sorted(_DTYPES))}") from None


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def parse_shape(text: str) -> list[int]:
    try:
        dims = [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    except ValueError:
        raise InputSpecError(f"bad input shape {text!r}", "write it as comma-separated sizes, e.g. 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputSpecError(f"bad input shape {text!r}", "every size must be a positive integer, e.g. 1,3,224,224")
    return dims


@dataclass(frozen=True)
class InputSpec:
    """One example input as the user described it: its shape, its own dtype (None: --dtype, else a default) and the
    keyword the model takes it by (None: positional). `-s input_ids=1,128:int64` is
    InputSpec((1, 128), "int64", "input_ids")."""

    shape: tuple[int, ...]
    dtype: str | None = None
    name: str | None = None

    def at_batch(self, b: int) -> InputSpec:
        return InputSpec((b, *self.shape[1:]), self.dtype, self.name)


Shape = Union[Sequence[int], InputSpec]
_SPEC_HINT = "write NAME=D0,D1,...[:DTYPE] or D0,D1,...[:DTYPE], e.g. -s input_ids=1,128:int64 -s pixel_values=1,3,224,224"


def parse_input(text: str) -> InputSpec:
    """`1,3,224,224`, `1,128:int64`, `input_ids=1,128:int64` -> an InputSpec; one InputSpecError for anything else."""
    body, name, dt = text.strip(), None, None
    if "=" in body:
        name, body = (p.strip() for p in body.split("=", 1))
        if not name.isidentifier():
            raise InputSpecError(f"bad input shape {text!r}: {name!r} is not an argument name", _SPEC_HINT)
    if ":" in body:
        body, dt_text = (p.strip() for p in body.rsplit(":", 1))
        try:
            dt = dtype_name(parse_dtype(dt_text))
        except InputSpecError as e:
            raise InputSpecError(f"bad input shape {text!r}: unknown dtype {dt_text!r}", e.hint) from None
    try:
        shape = parse_shape(body)
    except InputSpecError as e:
        raise InputSpecError(f"bad input shape {text!r}: the sizes {body!r} must be positive integers",
                             _SPEC_HINT if name or dt else e.hint) from None
    return InputSpec(tuple(shape), dt, name)


def normalize_shapes(input_shapes: Any) -> list[Shape] | None:
    """The `input_shapes` the API takes -> plain shapes and InputSpecs, checked (positional first, names once).
    Accepted: a list whose entries are shapes ([1, 3, 224, 224]), InputSpecs, or CLI strings
    ("input_ids=1,128:int64"); or a dict {name: shape or "1,128:int64"} of keyword inputs."""
    if not input_shapes:
        return None
    if isinstance(input_shapes, dict):
        out: list[Shape] = []
        for name, v in input_shapes.items():
            sp = parse_input(v) if isinstance(v, str) else as_spec(v)
            out.append(InputSpec(sp.shape, sp.dtype, str(name)))
    else:
        out = []
        for v in input_shapes:
            if isinstance(v, str):
                sp = parse_input(v)
                out.append(sp if sp.name or sp.dtype else list(sp.shape))
            elif isinstance(v, InputSpec):
                out.append(v)
            else:
                out.append([int(d) for d in v])
    check_order(out)
    return out


def as_spec(s: Shape) -> InputSpec:
    return s if isinstance(s, InputSpec) else InputSpec(tuple(int(d) for d in s))


def with_batch(s: Shape, b: int) -> Shape:
    """The same input with its first dimension set to b (a plain shape stays a plain list)."""
    return s.at_batch(b) if isinstance(s, InputSpec) else [b, *list(s)[1:]]


def shape_of(s: Shape) -> list[int]:
    return list(s.shape) if isinstance(s, InputSpec) else [int(d) for d in s]


def check_order(specs: Sequence[Shape]) -> None:
    """Positional inputs first, each keyword once."""
    seen: set[str] = set()
    for s in specs:
        name = s.name if isinstance(s, InputSpec) else None
        if name is None and seen:
            raise InputSpecError("a positional input shape comes after a named one",
                                 "give the positional inputs first, then NAME=... ones")
        if name is not None:
            if name in seen:
                raise InputSpecError(f"input {name!r} given twice", "give each named input once")
            seen.add(name)


class Named(dict):
    """The keyword inputs of a model call, carried as the last element of an inputs tuple: the model is called as
    `model(*positional, **named)` (see `split_inputs`, `call_model`). A pytree node, so tree_map / tree_flatten
    (moving inputs to a device, to meta) see its tensors."""


register_pytree_node(Named, lambda d: (list(d.values()), list(d.keys())), lambda values, keys: Named(zip(keys, values)))


def join_inputs(args: Sequence[Any], kwargs: dict[str, Any] | None = None) -> tuple:
    """(positional..., Named(kwargs)) -- or the plain tuple when there are no keyword inputs."""
    return (*args, Named(kwargs)) if kwargs else tuple(args)


def split_inputs(inputs: Any) -> tuple[tuple, dict[str, Any]]:
    """An inputs value (a tensor, a tuple possibly ending with Named, a dict) -> (args, kwargs)."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, dict):
        return (), dict(inputs)
    inputs = tuple(inputs)
    if inputs and isinstance(inputs[-1], dict):
        return inputs[:-1], dict(inputs[-1])
    return inputs, {}


def normalize_inputs(inputs: Any) -> tuple:
    """What a user passed as `inputs` (a tensor, a tuple or list of them, a dict of keyword inputs, or a tuple whose
    last element is such a dict) -> the inputs tuple every pass takes."""
    args, kwargs = split_inputs(inputs)
    return join_inputs(args, kwargs)


def call_model(model: Any, inputs: Any) -> Any:
    args, kwargs = split_inputs(inputs)
    return model(*args, **kwargs)


def map_tensors(fn: Any, inputs: Any) -> Any:
    """`inputs` (a tensor, or a tuple possibly ending with Named) with `fn` applied to each tensor in it."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, inputs)


def lead(inputs: Any) -> torch.Tensor | None:
    """The input a batch is read from: the first positional tensor, else the first keyword one (a Hugging Face
    model called with input_ids=..., decoder_input_ids=...)."""
    tensors = input_tensors(inputs)
    return tensors[0][1] if tensors else None


def with_lead(inputs: Any, t: torch.Tensor) -> tuple:
    """The inputs tuple with its lead input (see `lead`) replaced by `t`."""
    args, kwargs = split_inputs(inputs)
    i = next((i for i, a in enumerate(args) if isinstance(a, torch.Tensor)), None)
    if i is not None:
        return join_inputs((*args[:i], t, *args[i + 1:]), kwargs)
    k = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return join_inputs(args, {**kwargs, k: t})


def repeat_batch(inputs: Any, b: int) -> tuple:
    """The inputs at batch `b` (dim 0): every tensor whose first dimension is the lead input's is repeated and cut
    to b samples; the others (a shared mask, a scalar) are left as they are."""
    x = lead(inputs)
    n = x.shape[0] if x is not None and x.dim() else None

    def fit(t: torch.Tensor) -> torch.Tensor:
        if n is None or not t.dim() or t.shape[0] != n:
            return t
        return torch.cat([t] * math.ceil(b / n))[:b]

    return map_tensors(fit, normalize_inputs(inputs))


def input_tensors(inputs: Any) -> list[tuple[str | None, torch.Tensor]]:
    """(name or None, tensor) for each top-level input tensor, positional first."""
    args, kwargs = split_inputs(inputs)
    return [(None, t) for t in args if isinstance(t, torch.Tensor)] + [
        (k, t) for k, t in kwargs.items() if isinstance(t, torch.Tensor)]


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


_INT_NAMES = ("input_ids", "decoder_input_ids", "token_type_ids", "position_ids", "labels", "attention_mask",
              "decoder_attention_mask")


def model_float_dtype(module: torch.nn.Module | None) -> torch.dtype:
    """The dtype a float input of `module` takes when none is given: its first floating parameter's (a half or
    bfloat16 checkpoint computes in that dtype, and a float32 input would fail its first matmul), else float32."""
    if module is not None:
        for p in module.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def _default_dtype(module: torch.nn.Module | None, spec: InputSpec, n: int) -> torch.dtype:
    """A positional input (or a model's only input) takes int64 when the first layer is an embedding; a named one
    takes int64 when its name says token ids or a mask, else the model's float dtype (float32 for most)."""
    if spec.name is not None and (spec.name in _INT_NAMES or spec.name.endswith(("_ids", "_mask"))):
        return torch.int64
    if spec.name is None or n == 1:
        first = _first_layer(module) if module is not None else None
        if isinstance(first, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            return torch.int64
    return model_float_dtype(module)


def _tensor(module: torch.nn.Module | None, shape: list[int], dt: torch.dtype, name: str | None,
            gen: torch.Generator) -> torch.Tensor:
    if dt.is_floating_point:
        return torch.randn(shape, generator=gen).to(dt)
    if dt == torch.bool:
        return torch.zeros(shape, dtype=torch.bool)
    if name is not None and name.endswith("mask"):
        return torch.ones(shape, dtype=dt)
    if name == "token_type_ids":
        return torch.zeros(shape, dtype=dt)
    high = 2
    if name is None:
        first = _first_layer(module) if module is not None else None
        emb = first if isinstance(first, (torch.nn.Embedding, torch.nn.EmbeddingBag)) else None
    else:  # a named integer input: token ids within the first embedding's vocabulary
        emb = next((m for m in module.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))),
                   None) if module is not None else None
    if emb is not None:
        high = emb.num_embeddings
    return torch.randint(0, high, shape, generator=gen, dtype=dt)


def make_inputs(
    module: torch.nn.Module | None,
    shapes: Sequence[Shape] | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    assumed: str | None = None,
) -> tuple[tuple, list[InputInfo], str | None]:
    """Inputs to run the model with (a tuple for `call_model`: positional tensors, then a Named dict of the keyword
    ones), their descriptions, and why they were assumed (or None). `shapes` are plain shapes (positional, of
    `dtype`) or InputSpecs (each with its own name and dtype; `dtype` fills in where it has none). `assumed`
    says where `shapes` came from when the user did not give them (they are then marked assumed)."""
    why = None
    default = parse_dtype(dtype) if dtype else None
    if shapes:
        check_order(shapes)
        given = [as_spec(s) for s in shapes]
        specs = [(list(sp.shape), parse_dtype(sp.dtype) if sp.dtype else default or _default_dtype(module, sp, len(given)),
                  sp.name) for sp in given]
        why = assumed
        is_assumed = assumed is not None
    else:
        s, dt, guess = guess_shape(module)
        if dt.is_floating_point:
            dt = model_float_dtype(module)
        why = f"the {guess}"
        specs = [(s, default or dt, None)]
        is_assumed = True
    check_input_bytes((name or (f"input {i + 1}" if len(specs) > 1 else "the input"), shape, dtype_name(dt),
                       torch.empty((), dtype=dt).element_size()) for i, (shape, dt, name) in enumerate(specs))
    gen = torch.Generator().manual_seed(seed)
    args: list[torch.Tensor] = []
    named: dict[str, torch.Tensor] = {}
    infos = []
    for shape, dt, name in specs:
        t = _tensor(module, shape, dt, name, gen)
        if device not in ("cpu", "meta"):
            t = t.to(device)
        if name is None:
            args.append(t)
        else:
            named[name] = t
        infos.append(InputInfo(shape=list(shape), dtype=dtype_name(dt), assumed=is_assumed, name=name))
    return join_inputs(args, named), infos, why


def spec_of(info: InputInfo, batch: int | None = None) -> InputSpec:
    shape = tuple(info.shape) if batch is None else (batch, *info.shape[1:])
    return InputSpec(shape, info.dtype, getattr(info, "name", None))


def from_infos(module: torch.nn.Module | None, infos: list[InputInfo], seed: int = 0, batch: int | None = None) -> tuple:
    """Rebuild example inputs from a report's input descriptions (each with its own dtype and name; seeded per
    input), optionally at another batch size."""
    args: list[torch.Tensor] = []
    named: dict[str, torch.Tensor] = {}
    for i, info in enumerate(infos):
        t, _, _ = make_inputs(module, [spec_of(info, batch)], seed=seed + i)
        a, k = split_inputs(t)
        args.extend(a)
        named.update(k)
    return join_inputs(args, named)
