"""A compress transform is declared once, the twin of a rule's `@rule`: a decorated function that builds the variant.

    @transform("fold-conv-bn", backend="torch", applies=has_conv_and_bn, fixes=("ARC002", "EFF004"),
               summary="BatchNorm folded into the convolution before it")
    def fold_conv_bn(module, example_inputs):
        return torch_variants.fold_conv_bn(module, example_inputs)   # -> (new_module, info)

- `name`: kebab-case and unique; what `dldoctor compress -t NAME` takes, what a rule's finding names in its
  `transform`, and the variant's name in the report.
- `backend`: "torch" (the function takes `(module, example_inputs)` and returns `(new_module, info)`) or "onnx"
  (it takes `(src, dst, calib)`, writes `dst` from the ONNX file `src`, and returns an info dict with "path";
  `calib()` gives the calibration batches, as tuples of tensors). The work itself lives in torch_variants.py
  and onnx_variants.py.
- `applies`: `applies(module) -> bool` on a PyTorch input: False leaves the transform out of a default run (no
  convolutions, nothing to fold). None: always. An ONNX input gets every ONNX transform and no torch one.
- `fixes`: the rule codes whose findings the transform applies (`--from-findings`); checked against the rule
  registry by tests/transforms/test_transform_catalog.py, not here, so that this module imports no rule.
- `summary`: one line for the help and the docs.
- `numerics`: the number format the variant computes in when the transform sets one ("fp16", "bf16", "int8");
  None for a structural transform (folding, pruning), whose variant computes in the original's precision:
  `compress --precision bf16` casts it to bf16 after building, so that it is measured like for like. A cast
  to the precision the original already runs in is left out of the run.

The order of declaration is the order a run makes the variants in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from dldoctor.errors import InputSpecError

BACKENDS = ("torch", "onnx")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CODE = re.compile(r"^[A-Z]{3}\d{3}$")


class TransformDefinitionError(Exception):
    pass


@dataclass(frozen=True)
class Transform:
    name: str
    backend: str
    fn: Callable[..., Any]
    applies: Callable[[Any], bool] | None
    fixes: tuple[str, ...]
    summary: str
    numerics: str | None = None

    @property
    def format(self) -> str:
        """The variant's file format as the report spells it."""
        return "pytorch" if self.backend == "torch" else "onnx"

    def applies_to(self, module: Any) -> bool:
        return self.applies is None or bool(self.applies(module))

    def build(self, *args: Any) -> Any:
        return self.fn(*args)


CATALOG: dict[str, Transform] = {}


def transform(name: str, *, backend: str, applies: Callable[[Any], bool] | None = None,
              fixes: Iterable[str] = (), summary: str,
              numerics: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the transform `name` (see the module docstring)."""
    fixes = tuple(fixes)
    if not _NAME.match(name):
        raise TransformDefinitionError(f"transform name {name!r} is not kebab-case")
    if name in CATALOG:
        raise TransformDefinitionError(f"transform {name!r} is declared twice")
    if backend not in BACKENDS:
        raise TransformDefinitionError(f"transform {name!r}: backend {backend!r}, expected one of {BACKENDS}")
    bad = [c for c in fixes if not isinstance(c, str) or not _CODE.match(c)]
    if bad:
        raise TransformDefinitionError(f"transform {name!r}: fixes={bad!r} are not rule codes like 'ARC002'")
    if not summary.strip():
        raise TransformDefinitionError(f"transform {name!r} has no summary")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        CATALOG[name] = Transform(name, backend, fn, applies, fixes, summary.strip(), numerics)
        return fn

    return register


def names(backend: str | None = None) -> tuple[str, ...]:
    """The transforms in the order a run makes them, all or one backend's."""
    return tuple(n for n, t in CATALOG.items() if backend is None or t.backend == backend)


def get(name: str) -> Transform:
    return CATALOG[name]


def check_names(wanted: Iterable[str]) -> list[str]:
    """`wanted` as a list, or InputSpecError naming the unknown ones and the known ones."""
    wanted = list(wanted)
    unknown = [n for n in wanted if n not in CATALOG]
    if unknown:
        raise InputSpecError(f"unknown transform(s): {', '.join(unknown)}", f"use: {', '.join(names())}")
    return wanted


def for_findings(findings: Iterable[Any]) -> list[str]:
    """The transforms that apply what the findings point to, each once, in the order the findings come.

    A finding counts when it names a transform (its rule marked this finding as one `dldoctor compress` can
    act on); it selects that transform and every other one whose `fixes` include the finding's code: both
    int8 variants for a Linear-heavy model, the quantizers for a size budget. Per finding, the ONNX ones come
    first (they apply to a PyTorch and an ONNX input alike), each backend in catalog order.
    """
    order = {n: i for i, n in enumerate(names("onnx") + names("torch"))}
    out: list[str] = []
    for f in findings:
        if not getattr(f, "transform", None):
            continue
        hits = [t.name for t in CATALOG.values() if t.name == f.transform or f.code in t.fixes]
        for n in sorted(hits, key=order.__getitem__):
            if n not in out:
                out.append(n)
    return out


# -- what a transform applies to (PyTorch inputs) ---------------------------------------------------------


def _has(module: Any, *bases: type) -> bool:
    return any(isinstance(m, bases) for m in module.modules())


def has_conv(module: Any) -> bool:
    import torch

    return _has(module, torch.nn.modules.conv._ConvNd)


def has_conv_and_bn(module: Any) -> bool:
    import torch

    return has_conv(module) and _has(module, torch.nn.modules.batchnorm._BatchNorm)


def has_linear_or_rnn(module: Any) -> bool:
    import torch

    return _has(module, torch.nn.Linear, torch.nn.RNNBase)


# -- the catalog: this order is the order of a run ---------------------------------------------------------
# A rule's finding names one transform; the others that fix the same finding list its code in `fixes`. Where
# a torch and an ONNX variant both apply a fix (int8, fp16), the finding names the ONNX one, which runs on a
# PyTorch and an ONNX input alike; `--from-findings` takes both.


@transform("fold-conv-bn", backend="torch", applies=has_conv_and_bn, fixes=("ARC002", "EFF004"),
           summary="BatchNorm folded into the convolution before it")
def _fold_conv_bn(module: Any, example_inputs: tuple) -> tuple[Any, dict]:
    from dldoctor.transforms import torch_variants

    return torch_variants.fold_conv_bn(module, example_inputs)


@transform("torch-fp16", backend="torch", fixes=("EFF003", "BUD004", "BUD009"), numerics="fp16",
           summary="a float16 PyTorch copy")
def _torch_fp16(module: Any, example_inputs: tuple) -> tuple[Any, dict]:
    import torch

    from dldoctor.transforms import torch_variants

    return torch_variants.to_half(module, torch.float16)


@transform("torch-bf16", backend="torch", numerics="bf16", summary="a bfloat16 PyTorch copy")
def _torch_bf16(module: Any, example_inputs: tuple) -> tuple[Any, dict]:
    import torch

    from dldoctor.transforms import torch_variants

    return torch_variants.to_half(module, torch.bfloat16)


@transform("torch-int8-dynamic", backend="torch", applies=has_linear_or_rnn, fixes=("EFF001", "BUD003", "BUD008"),
           numerics="int8",
           summary="torch.ao dynamic int8 for Linear/LSTM/GRU, and int8 embedding tables")
def _torch_int8_dynamic(module: Any, example_inputs: tuple) -> tuple[Any, dict]:
    from dldoctor.transforms import torch_variants

    return torch_variants.dynamic_int8(module, example_inputs)


@transform("prune-50", backend="torch", applies=has_conv, fixes=("INI004",),
           summary="structured pruning of 50% of the channels (Torch-Pruning); needs fine-tuning afterwards")
def _prune_50(module: Any, example_inputs: tuple) -> tuple[Any, dict]:
    from dldoctor.transforms import torch_variants

    return torch_variants.prune_channels(module, example_inputs, amount=0.5)


@transform("onnx-optimized", backend="onnx",
           summary="the exported graph with ONNX Runtime's basic optimisation (constant folding)")
def _onnx_optimized(src: str, dst: str, calib: Callable[[], list]) -> dict:
    from dldoctor.transforms import onnx_variants

    prep = onnx_variants.prepare_for_quantization(src, dst, share_tables=True)
    return {"path": dst, "preparation": prep, "ops_before": onnx_variants.op_histogram(src),
            "ops_after": onnx_variants.op_histogram(dst)}


@transform("onnx-int8-dynamic", backend="onnx", fixes=("EFF001", "BUD003", "BUD008"), numerics="int8",
           summary="int8 weights for MatMul/Gemm and embedding tables, activations quantized at run time")
def _onnx_int8_dynamic(src: str, dst: str, calib: Callable[[], list]) -> dict:
    from dldoctor.transforms import onnx_variants

    return onnx_variants.quantize_dynamic_int8(src, dst)


@transform("onnx-int8-static", backend="onnx", applies=has_conv, fixes=("BUD003", "BUD008"), numerics="int8",
           summary="QDQ per-channel int8 for conv nets, calibrated (synthetic inputs or --calib)")
def _onnx_int8_static(src: str, dst: str, calib: Callable[[], list]) -> dict:
    import onnx

    from dldoctor.transforms import onnx_variants

    graph = onnx.load(src, load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    feeds = [onnx_variants.feed(inputs, x) for x in calib()]
    return onnx_variants.quantize_static_int8(src, dst, feeds)


@transform("onnx-fp16", backend="onnx", fixes=("EFF003", "BUD004", "BUD009"), numerics="fp16",
           summary="float16 weights and compute, float32 inputs and outputs")
def _onnx_fp16(src: str, dst: str, calib: Callable[[], list]) -> dict:
    from dldoctor.transforms import onnx_variants

    return onnx_variants.to_fp16(src, dst)
