"""The torch side of `inspect`: parameters, the counting passes (MACs, memory), receptive field and the
layer table of one `nn.Module`, filled into a Report. Its twin for ONNX graphs is `collect/onnx/`."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_map

from dldoctor.collect.inputs import input_tensors, make_inputs, normalize_inputs
from dldoctor.collect.memory import memory_stats
from dldoctor.collect.params import dtype_name, module_param_counts, param_stats
from dldoctor.collect.trace import PassResult, run_pass
from dldoctor.errors import InputSpecError
from dldoctor.load.base import Loaded
from dldoctor.report.llm_types import LLMPlan, PlanOptions
from dldoctor.report.types import (
    COMPLETE,
    PARTIAL,
    UNAVAILABLE,
    FlopStats,
    InputInfo,
    LayerInfo,
    ParamStats,
    ReceptiveField,
    Report,
)

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def weights_only(report: Report, loaded: Loaded) -> None:
    """A weight file without an architecture: count what the tensors say, and say what is missing."""
    tensors = loaded.tensors or []
    report.tensors = tensors
    p = ParamStats()
    for t in tensors:
        n = 1
        for d in t.shape:
            n *= d
        if t.name.endswith(_BUFFER_SUFFIXES):
            p.buffers += n
            p.buffer_bytes += t.nbytes
        else:
            p.total += n
            p.bytes += t.nbytes
            p.by_dtype[t.dtype] = p.by_dtype.get(t.dtype, 0) + n
    p.trainable = p.total
    report.params = p
    why = "needs the architecture: pass --arch pkg.module:factory"
    if loaded.format in ("torchscript", "torch-export"):
        why = "the archive can carry code and was not loaded: pass --trust to load it"
    report.flops = FlopStats(status=UNAVAILABLE, reason=why)
    report.memory.params_bytes, report.memory.buffers_bytes = p.bytes, p.buffer_bytes
    report.memory.reason = why
    report.receptive_field = ReceptiveField(status=UNAVAILABLE, reason=why)


def _on_meta(module: torch.nn.Module) -> bool:
    return any(t.is_meta for t in module.parameters()) or any(t.is_meta for t in module.buffers())


SMALL_WEIGHTS = 64 << 20  # bytes of weights, and
SMALL_INPUTS = 1 << 20  # of inputs, up to which a CPU model is counted by running it for real


def pass_device(module: torch.nn.Module, inputs: Any, device: str) -> str:
    """Where to run a counting pass: a small model with real weights on the CPU runs there (its C++ kernels are
    cheaper than the meta device's Python ones, which import sympy and torch._dynamo: seconds of start-up); the
    rest on meta, which allocates nothing."""
    if device != "cpu" or _on_meta(module):
        return "meta"
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.device.type != "cpu" for t in tensors) or sum(t.numel() * t.element_size() for t in tensors) > SMALL_WEIGHTS:
        return "meta"
    given = [t for _, t in input_tensors(inputs)]
    if any(t.device.type != "cpu" for t in given) or sum(t.numel() * t.element_size() for t in given) > SMALL_INPUTS:
        return "meta"
    return "cpu"


def count_pass(module: torch.nn.Module, inputs: tuple, device: str, train: bool = False, report: Report | None = None,
               loss: str | None = None) -> PassResult:
    """Count on the meta device (a small CPU model: on the CPU, see `pass_device`); fall back to the real device
    when the model cannot run on meta (said in the report's diagnostics when one is given)."""
    if pass_device(module, inputs, device) == "cpu":
        return run_pass(module, inputs, device="cpu", train=train, loss=loss)
    r = run_pass(module, inputs, device="meta", train=train, loss=loss)
    if r.error is None or _on_meta(module) or device == "meta":
        return r
    real = run_pass(module, inputs, device=device, train=train, loss=loss)
    if real.error is None and not train and report is not None:
        report.diag("info", f"counted on {device}: the model does not run on the meta device ({r.error})")
    return real


def inspect_module(
    report: Report,
    module: torch.nn.Module,
    inputs: Any,
    input_shapes: list[list[int]] | None,
    dtype: str | None,
    device: str,
    depth: int | None,
    optimizer: str,
    training: bool,
    want_rf: bool,
    loss: str | None = None,
    batch_sizes: list[int] | None = None,
    plan: PlanOptions | None = None,
    assumed: str | None = None,
) -> None:
    """`assumed`: `input_shapes` were not given by the user but suggested by the file (where from, said in the
    report; the inputs are marked assumed)."""
    report.device = device
    params = param_stats(module)
    report.params = params
    trainable_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in module.parameters()}.values() if p.requires_grad)
    try:
        if inputs is not None:
            args = normalize_inputs(inputs)  # a tensor, a tuple, a dict of keyword inputs, or a tuple ending with one
            report.inputs = [InputInfo(list(t.shape), dtype_name(t.dtype), False, name) for name, t in input_tensors(args)]
        else:
            args, report.inputs, why = make_inputs(module, input_shapes, dtype, device=device, assumed=assumed)
            if why:
                report.diag("info", f"example input assumed from {why}; pass --input-shape to set it")
    except InputSpecError as e:
        report.flops = FlopStats(status=UNAVAILABLE, reason=e.message)
        report.memory = memory_stats(params, trainable_bytes, 0, None, None, optimizer)
        report.memory.reason = e.message
        report.receptive_field = ReceptiveField(status=UNAVAILABLE, reason=e.message)
        report.diag("warning", f"{e.message}; {e.hint}")
        report.llm_plan = llm_plan_for(module, plan, report)
        return

    inf = count_pass(module, args, device, False, report)
    counted_on = inf.device
    if counted_on != "meta" and counted_on != device:
        report.device = counted_on
    tr = (count_pass(module, args, counted_on if counted_on != "meta" else device, True, report, loss)
          if training and inf.error is None else None)

    report.flops = _flop_stats(inf, tr, training)
    if inf.error:
        where = f" in layer '{inf.error_module}' ({_type_at(module, inf.error_module)})" if inf.error_module else ""
        report.diag("error", f"forward pass failed{where}: {inf.error}", inf.error_module)
        from dldoctor.collect.collapse import collapse_note  # a window larger than its map: say where and what fits

        note = collapse_note(module, args, inf.device if inf.device in ("cpu", "meta") else "meta")
        if note:
            report.diag("info", note, inf.error_module)
    input_bytes = sum(t.numel() * t.element_size() for _, t in input_tensors(args))
    batch = report.inputs[0].shape[0] if report.inputs and report.inputs[0].shape else None
    report.memory = memory_stats(params, trainable_bytes, input_bytes, inf, tr if training else None, optimizer, batch)
    if batch_sizes and inf.error is None:
        report.memory.per_batch = _memory_by_batch(module, args, batch_sizes, params, trainable_bytes, optimizer,
                                                   training, loss, report)
    if not training and report.memory.status != UNAVAILABLE:
        report.memory.reason = "training pass not run"

    per_module_rf: dict[str, ReceptiveField] = {}
    if want_rf:
        report.receptive_field, per_module_rf = _receptive_field(module, args, inf)
    else:
        report.receptive_field = ReceptiveField(status=UNAVAILABLE, reason="not computed (disabled)")
    report.layers = _layers(module, inf, per_module_rf, depth)
    report.llm_plan = llm_plan_for(module, plan, report)


_DECODER_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_DEFAULT_CONTEXT = 128


def llm_plan_for(module: torch.nn.Module, opts: PlanOptions | None, report: Report | None = None) -> LLMPlan | None:
    """The memory plan of a decoder that carries its transformers-style `config` (num_hidden_layers,
    hidden_size, num_attention_heads, ...); None for anything else (nothing is inferred from the module's
    structure alone). Context and batch default to the example input's (batch, T), else 1 × 128."""
    from dldoctor.collect.llm_plan import arch_from_config, build_plan

    config = getattr(module, "config", None)
    names = [type(module).__name__, *(_config_get(config, "architectures") or ())]
    if config is None or not any(str(n).endswith(_DECODER_SUFFIXES) for n in names):
        return None
    unique = {id(p): p for p in module.parameters()}
    emb = {id(p): p for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False)}
    total = sum(p.numel() for p in unique.values())
    wbytes = sum(p.numel() * p.element_size() for p in unique.values())
    by_dtype: dict[str, int] = {}
    for p in unique.values():
        by_dtype[dtype_name(p.dtype)] = by_dtype.get(dtype_name(p.dtype), 0) + p.numel()
    wdtype = max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else "float32"
    stated = _stated_dtype(config)
    if stated and unique and all(p.is_meta for p in unique.values()):
        # built on meta from a config: the weights are what the config says they are (fp16 for a Llama folder)
        wdtype, wbytes = stated, total * torch.empty(0, dtype=getattr(torch, stated)).element_size()
    arch = arch_from_config(config, total, sum(p.numel() for p in emb.values()), wbytes, wdtype)
    if arch is None:
        return None
    opts = opts or PlanOptions()
    context, batch = opts.context, opts.batch_size
    tokens = next((i.shape for i in (report.inputs if report else []) if len(i.shape) == 2
                   and not i.dtype.startswith(("float", "bfloat", "complex"))), None)
    if context is None:
        context = tokens[1] if tokens else _DEFAULT_CONTEXT
    if batch is None:
        batch = tokens[0] if tokens else 1
    return build_plan(arch, opts, max(1, context), max(1, batch))


def _config_get(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


def _stated_dtype(config: Any) -> str | None:
    """The weights' dtype a transformers config states (`torch_dtype`, `dtype` in transformers 5), if a float one."""
    for name in ("dtype", "torch_dtype"):
        v = _config_get(config, name)
        v = dtype_name(v) if isinstance(v, torch.dtype) else str(v).removeprefix("torch.") if v else None
        if v in ("float32", "float16", "bfloat16"):
            return v
    return None


def _memory_by_batch(module: torch.nn.Module, args: tuple, sizes: list[int], params: ParamStats, trainable_bytes: int,
                     optimizer: str, training: bool, loss: str | None, report: Report) -> list[dict[str, Any]]:
    """Memory at other batch sizes: the same passes with the inputs' leading dimension changed."""
    from dldoctor.collect.inputs import check_input_bytes

    rows = []
    for b in sizes:
        check_input_bytes((f"{name or f'input {i}'} at --batch-sizes {b}", [b, *t.shape[1:]],
                           str(t.dtype).removeprefix("torch."), t.element_size())
                          for i, (name, t) in enumerate(input_tensors(args)) if t.dim())
        scaled = tree_map(lambda t: t.expand(b, *t.shape[1:]).contiguous() if isinstance(t, torch.Tensor) and t.dim() else t,
                          args)
        inf = count_pass(module, scaled, report.device, False, report)
        tr = count_pass(module, scaled, report.device, True, report, loss) if training and inf.error is None else None
        in_bytes = sum(t.numel() * t.element_size() for _, t in input_tensors(scaled))
        m = memory_stats(params, trainable_bytes, in_bytes, inf, tr, optimizer, b)
        rows.append({"batch_size": b, "inference_peak_bytes": m.inference_peak_bytes,
                     "training_peak_bytes": m.training_peak_bytes, "status": m.status})
    return rows


def _type_at(module: torch.nn.Module, path: str | None) -> str:
    try:
        return type(module.get_submodule(path or "")).__name__
    except AttributeError:
        return "?"


def _flop_stats(inf: PassResult, tr: PassResult | None, training: bool) -> FlopStats:
    f = FlopStats(macs=inf.macs, flops=2 * inf.macs, uncounted_ops=dict(sorted(inf.uncounted.items())))
    reasons = []
    if inf.error:
        reasons.append(f"forward pass failed part-way ({inf.error}); counted up to the failure")
    if inf.uncounted:
        reasons.append("ops without a MAC formula were not counted: " + ", ".join(sorted(inf.uncounted)))
    f.status = PARTIAL if reasons else COMPLETE
    if tr is not None and tr.error is None:
        f.training_flops = 2 * (tr.macs + tr.backward_macs)
        f.training_status = PARTIAL if (tr.uncounted or tr.backward_uncounted) else COMPLETE
        for k, v in tr.backward_uncounted.items():
            f.uncounted_ops[f"backward:{k}"] = v
        if tr.backward_uncounted:
            reasons.append("backward ops without a formula: " + ", ".join(sorted(tr.backward_uncounted)))
    else:
        f.training_status = UNAVAILABLE
        if training:
            reasons.append("training-step FLOPs unavailable: " + (tr.error if tr is not None and tr.error else "forward failed"))
    f.reason = "; ".join(reasons) or None
    return f


def _receptive_field(module: torch.nn.Module, args: tuple, inf: PassResult) -> tuple[ReceptiveField, dict[str, ReceptiveField]]:
    first = next((t for _, t in input_tensors(args)), None)
    if not isinstance(first, torch.Tensor) or not first.is_floating_point() or first.dim() < 3:
        return ReceptiveField(status=UNAVAILABLE, reason="not applicable: the input has no spatial dimensions"), {}
    if inf.error:
        return ReceptiveField(status=UNAVAILABLE, reason="the forward pass failed"), {}
    from dldoctor.collect.receptive import receptive_field
    from dldoctor.collect.trace import eval_mode, stand_ins, to_device

    device = "meta" if inf.device == "meta" else inf.device
    try:
        with eval_mode(module), stand_ins(module, device):
            res = receptive_field(module, to_device(args, device))
    except Exception as e:  # noqa: BLE001 - the field is one fact among many; say why it is missing
        return ReceptiveField(status=UNAVAILABLE, reason=f"the receptive-field pass failed: {type(e).__name__}: {str(e)[:200]}"), {}
    return res.overall, res.per_module


def _layers(module: torch.nn.Module, inf: PassResult, rf: dict[str, ReceptiveField], depth: int | None) -> list[LayerInfo]:
    counts = module_param_counts(module)
    total = inf.macs or 0
    out = []
    for path in inf.order:
        if path == "":
            continue
        d = path.count(".") + 1
        if depth is not None and d > depth:
            continue
        macs = inf.module_macs.get(path, 0)
        out.append(
            LayerInfo(
                path=path,
                type=_type_at(module, path),
                output_shape=inf.output_shapes.get(path),
                params=counts.get(path, 0),
                macs=macs,
                share=(macs / total) if total else 0.0,
                depth=d,
                receptive_field=rf.get(path),
                calls=inf.module_calls.get(path, 0),
            )
        )
    return out

