"""PyTorch-side compression transforms: Conv+BN folding, fp16/bf16, dynamic int8, structured channel pruning.

Every transform works on a deep copy of the caller's module in eval mode (the caller's parameters, training
flag and hooks are never touched, also when the transform raises) and returns ``(new_module, info)`` where
``info`` holds the fields of :class:`dldoctor.report.compress_types.Variant` it fills::

    {"preparation": [str], "ops_before": {type: n}, "ops_after": {type: n},
     "changed": [module path], "left_float": {path: why}}
"""
from __future__ import annotations

import copy
import warnings
from collections import Counter
from typing import Any, Iterable

import torch
from torch import nn

from dldoctor.collect.inputs import call_model

__all__ = [
    "fold_conv_bn",
    "to_half",
    "dynamic_int8",
    "prune_channels",
    "param_count",
    "module_histogram",
]

Info = dict[str, Any]

_CONV_BN = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
    nn.ConvTranspose1d: nn.BatchNorm1d,
    nn.ConvTranspose2d: nn.BatchNorm2d,
    nn.ConvTranspose3d: nn.BatchNorm3d,
}


# --------------------------------------------------------------------------- helpers


def module_histogram(module: nn.Module) -> dict[str, int]:
    """Count of leaf modules (no children) by class name, e.g. ``{"Conv2d": 20, "BatchNorm2d": 20}``."""
    c: Counter[str] = Counter()
    for _, m in module.named_modules():
        if not any(True for _ in m.children()):
            c[type(m).__name__] += 1
    return dict(sorted(c.items()))


def param_count(module: nn.Module) -> int:
    """Number of weight elements: float parameters plus the packed weights of dynamically quantized modules."""
    seen: set[int] = set()
    n = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    for m in module.modules():
        if isinstance(getattr(m, "_packed_params", None), nn.Module) and callable(getattr(m, "weight", None)):
            w, b = m.weight(), m.bias()  # torch.ao dynamic quantized Linear
            n += w.numel() + (b.numel() if b is not None else 0)
        elif hasattr(m, "_all_weight_values") and callable(getattr(m, "get_weight", None)):
            for t in list(m.get_weight().values()) + list(m.get_bias().values()):
                if isinstance(t, torch.Tensor):
                    n += t.numel()
    return n


def _as_tuple(example_inputs: Any) -> tuple:
    """An inputs tuple as the passes take it (positional tensors, then a Named dict of keyword ones)."""
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)  # one tensor, or a dict of keyword inputs


def _run(model: nn.Module, example_inputs: Any) -> Any:
    return call_model(model, _as_tuple(example_inputs))


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _working_copy(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module)
    m.eval()
    return m


def _new_info(module: nn.Module) -> Info:
    return {"preparation": [], "ops_before": module_histogram(module), "ops_after": {}, "changed": [], "left_float": {}}


def _is_leaf(m: nn.Module) -> bool:
    return not any(True for _ in m.children())


def _call_order(model: nn.Module, example_inputs: Any) -> list[str]:
    """Paths of leaf modules in the order they are called on one forward (on ``model``; hooks removed after)."""
    order: list[str] = []
    handles = []
    for path, m in model.named_modules():
        if path and _is_leaf(m):
            handles.append(m.register_forward_hook(lambda mod, inp, out, p=path: order.append(p)))
    _run_hooked(model, example_inputs, handles)
    return order


def _run_hooked(model: nn.Module, example_inputs: Any, handles: list) -> None:
    """One forward without grad, then every hook in `handles` removed, even when the forward raises."""
    try:
        with torch.no_grad():
            _run(model, example_inputs)
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- 1. Conv + BN folding


class _UseCounter(torch.overrides.TorchFunctionMode):
    """Counts the torch calls that consume a watched tensor outside the module allowed to consume it."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, str] = {}  # id(conv output) -> conv path
        self.extra_uses: Counter[str] = Counter()
        self.stack: list[str] = []  # leaf modules currently running

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.watched and isinstance(out, torch.Tensor):
            inside = self.stack[-1] if self.stack else None
            for a in _flat_tensors((args, kwargs)):
                conv = self.watched.get(id(a))
                if conv is not None and inside != conv and not (inside or "").startswith("bn-of:" + conv + "|"):
                    self.extra_uses[conv] += 1
        return out


def _flat_tensors(x: Any) -> Iterable[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _flat_tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flat_tensors(y)


def _find_conv_bn_pairs(model: nn.Module, example_inputs: Any) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(conv path, bn path) pairs where the BN's input tensor IS the conv's output and nothing else reads it."""
    leaves = {p: m for p, m in model.named_modules() if p and _is_leaf(m)}
    calls: Counter[str] = Counter()
    conv_out: dict[str, torch.Tensor] = {}  # conv path -> output (kept alive so ids stay unique)
    bn_in: dict[str, tuple[torch.Tensor, ...]] = {}
    counter = _UseCounter()
    bn_owner: dict[str, str] = {}  # bn path -> conv path whose output it consumed
    handles = []

    def pre(mod, inp, path):
        calls[path] += 1
        if isinstance(mod, tuple(set(_CONV_BN.values()))) and inp and isinstance(inp[0], torch.Tensor):
            bn_in[path] = inp
            owner = counter.watched.get(id(inp[0]))
            if owner is not None:
                bn_owner[path] = owner
                counter.stack.append("bn-of:" + owner + "|" + path)
                return
        counter.stack.append(path)

    def post(mod, inp, out, path):
        counter.stack.pop()
        if type(mod) in _CONV_BN and isinstance(out, torch.Tensor):
            conv_out[path] = out
            counter.watched[id(out)] = path

    for path, m in leaves.items():
        handles.append(m.register_forward_pre_hook(lambda mod, inp, p=path: pre(mod, inp, p)))
        handles.append(m.register_forward_hook(lambda mod, inp, out, p=path: post(mod, inp, out, p)))
    try:
        with torch.no_grad(), counter:
            _run(model, example_inputs)
    finally:
        for h in handles:
            h.remove()

    pairs: list[tuple[str, str]] = []
    skipped: dict[str, str] = {}
    for bn_path, conv_path in bn_owner.items():
        conv, bn = leaves[conv_path], leaves[bn_path]
        if bn_in[bn_path][0] is not conv_out.get(conv_path):
            continue
        if _CONV_BN[type(conv)] is not type(bn):
            skipped[conv_path] = f"followed by {type(bn).__name__}, not {_CONV_BN[type(conv)].__name__}"
        elif calls[conv_path] != 1 or calls[bn_path] != 1:
            skipped[conv_path] = "called more than once in a forward (shared module); not folded"
        elif counter.extra_uses[conv_path]:
            skipped[conv_path] = "its output is also read by something other than the BatchNorm; not folded"
        elif bn.running_mean is None or bn.running_var is None:
            skipped[conv_path] = "BatchNorm without running statistics (track_running_stats=False); not folded"
        elif sum(1 for b, c in bn_owner.items() if c == conv_path) != 1:
            skipped[conv_path] = "output consumed by several BatchNorms; not folded"
        else:
            pairs.append((conv_path, bn_path))
    return pairs, skipped


def fold_conv_bn(module: nn.Module, example_inputs: Any) -> tuple[nn.Module, Info]:
    """Fold each Conv{1,2,3}d / ConvTranspose directly followed by its BatchNorm into the conv; BN -> Identity.

    Pairs are found from one traced forward with ``example_inputs``: a conv and the BatchNorm whose input tensor
    is that conv's output object, and only when nothing else reads the conv's output.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = _working_copy(module)
    info = _new_info(model)
    pairs, skipped = _find_conv_bn_pairs(model, example_inputs)
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        transpose = isinstance(conv, nn.modules.conv._ConvTransposeNd)
        fused = fuse_conv_bn_eval(conv, bn, transpose=transpose)
        _set_submodule(model, conv_path, fused)
        _set_submodule(model, bn_path, nn.Identity())
        info["changed"].append(conv_path)
    info["left_float"].update(skipped)  # "left alone": convs that were not folded, and why
    info["preparation"].append(
        f"traced one forward to pair each conv with the BatchNorm consuming its output; folded {len(pairs)} pair(s)"
        " with torch.nn.utils.fusion.fuse_conv_bn_eval, BatchNorm replaced by nn.Identity"
    )
    info["ops_after"] = module_histogram(model)
    return model, info


# --------------------------------------------------------------------------- 2. fp16 / bf16


def to_half(module: nn.Module, dtype: torch.dtype = torch.float16) -> tuple[nn.Module, Info]:
    """A copy with every floating parameter and buffer cast to ``dtype`` (fp16 or bf16), norm layers included.

    The caller must feed inputs of ``dtype`` too (``x.to(dtype)``).
    """
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"to_half: dtype must be torch.float16 or torch.bfloat16, not {dtype}")
    model = _working_copy(module)
    info = _new_info(model)
    for path, m in model.named_modules():
        own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if any(t.is_floating_point() and t.dtype != dtype for t in own):
            info["changed"].append(path or "<root>")
    model = model.to(dtype)
    info["preparation"].append(
        f"cast every floating parameter and buffer to {str(dtype).replace('torch.', '')} with .to(dtype), "
        "normalization layers included (none kept in float32); inputs must be cast to the same dtype"
    )
    info["ops_after"] = module_histogram(model)
    return model, info


# --------------------------------------------------------------------------- 3. dynamic int8

_WHY_OUT_PROJ = (
    "MultiheadAttention reads out_proj.weight/.bias directly (F.multi_head_attention_forward and the fused "
    "transformer kernels), so a quantized module without a float .weight would break it; "
    "torch keeps this NonDynamicallyQuantizableLinear in float"
)
_WHY_IN_PROJ = (
    "in_proj_weight is a bare Parameter of MultiheadAttention, not an nn.Linear module; "
    "dynamic quantization only replaces modules"
)


def dynamic_int8(module: nn.Module, example_inputs: Any = None) -> tuple[nn.Module, Info]:
    """Dynamic int8 (weights int8, activations quantized on the fly) of nn.Linear / nn.LSTM / nn.GRU, and int8
    embedding tables (nn.Embedding / nn.EmbeddingBag, weight-only with a scale per row).

    Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated in torch 2.10+, still working in 2.14; its
    deprecation warnings are caught and noted in ``preparation``). Attention projections stay float; the
    transformer fast path (which reads ``.weight`` of every Linear) is switched off per layer so the forward
    still runs. With ``example_inputs`` the result is checked to run; when the int8 tables are what fails (torch's
    quantized Embedding takes only contiguous indices, and BERT passes an expanded token_type_ids), the tables stay
    float and ``left_float`` says why.
    """
    if any(isinstance(m, _EMBEDDINGS) for m in module.modules()):
        try:
            qmodel, info = _quantize_dynamic(module, embeddings=True, example_inputs=example_inputs)
            if example_inputs is not None:
                with torch.no_grad():
                    _run(qmodel, example_inputs)
            info["ops_after"] = module_histogram(qmodel)
            return qmodel, info
        except Exception as e:  # noqa: BLE001 - made again below with the tables left float, and said so
            text = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            why = f"{type(e).__name__}: {text}" if text else type(e).__name__
    else:
        why = None
    qmodel, info = _quantize_dynamic(module, embeddings=False)
    if why is not None:
        for path, m in qmodel.named_modules():
            if isinstance(m, _EMBEDDINGS):
                info["left_float"][path or "<root>"] = f"int8 tables failed ({why}): kept float"
    if example_inputs is not None:
        with torch.no_grad():
            _run(qmodel, example_inputs)
    info["ops_after"] = module_histogram(qmodel)
    return qmodel, info


_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def _reshare(qmodel: nn.Module, owners: dict[str, int]) -> list[str]:
    """After quantize_dynamic: a module registered under several names, or an embedding table tied to another
    (T5's encoder.embed_tokens and decoder.embed_tokens share `shared.weight`), comes back as one quantized copy
    per name; put the first copy under every name again, so that the saved file holds one table. `owners`: path ->
    id of what makes two paths the same (the module, or an embedding's weight). Returns the names re-shared."""
    first: dict[int, str] = {}
    done = []
    for path in sorted(owners, key=lambda p: (p.count("."), p)):  # parents before children
        key = owners[path]
        if key not in first:
            first[key] = path
            continue
        try:
            keep, here = qmodel.get_submodule(first[key]), qmodel.get_submodule(path)
        except AttributeError:
            continue
        if keep is not here and type(keep) is type(here):
            _set_submodule(qmodel, path, keep)
            done.append(path)
    return done


def _noncontiguous_tables(model: nn.Module, example_inputs: Any) -> set[str]:
    """Paths of the embedding tables that get a non-contiguous index tensor on the example (BERT expands its
    token_type_ids buffer): torch's int8 Embedding refuses those. One forward of `model` (this run's working copy),
    its hooks removed afterwards."""
    seen: set[str] = set()
    handles = []
    for path, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, _EMBEDDINGS):
            def pre(mod: nn.Module, args: tuple, path: str = path) -> None:
                if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
                    seen.add(path)
            handles.append(m.register_forward_pre_hook(pre))
    _run_hooked(model, example_inputs, handles)
    return seen


_WHY_NONCONTIGUOUS = ("its index tensor is not contiguous on the example (an expanded buffer), which torch's int8 "
                      "Embedding does not take: kept float")


def _quantize_dynamic(module: nn.Module, embeddings: bool, example_inputs: Any = None) -> tuple[nn.Module, Info]:
    """quantize_dynamic on a working copy: Linear/LSTM/GRU, and the embedding tables when asked (those the example
    hands a non-contiguous index tensor stay float); the fast paths that read float weights switched off."""
    model = _working_copy(module)
    info = _new_info(model)
    skip = _noncontiguous_tables(model, example_inputs) if embeddings and example_inputs is not None else set()
    tables = [p for p, m in model.named_modules(remove_duplicate=False) if isinstance(m, _EMBEDDINGS) and p not in skip]
    before = {p: type(m) for p, m in model.named_modules()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from torch.ao.quantization import (default_dynamic_qconfig, float_qparams_weight_only_qconfig,
                                           quantize_dynamic)

        spec: dict = {nn.Linear: default_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig,
                      nn.GRU: default_dynamic_qconfig}
        if embeddings:  # by name: a table left float is left out (a type key would take every table)
            spec.update({p: float_qparams_weight_only_qconfig for p in tables})
        # a table registered under several names, or tied to another table (T5's encoder/decoder embed_tokens
        # share `shared.weight`), is one quantized module afterwards (see _reshare)
        owners = {p: id(m.weight) if isinstance(m, _EMBEDDINGS) else id(m)
                  for p, m in model.named_modules(remove_duplicate=False) if p}
        qmodel = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    shared = _reshare(qmodel, owners)
    if shared:
        info["preparation"].append(f"one quantized module kept for each module or tied table under several names "
                                   f"({', '.join(shared)}): quantize_dynamic makes a copy per name")
    if any(issubclass(w.category, DeprecationWarning) for w in caught):
        info["preparation"].append(
            "torch.ao.quantization.quantize_dynamic is deprecated (torch suggests torchao's quantize_); "
            "it still works in this torch " + torch.__version__.split("+")[0]
        )
    info["preparation"].append("quantize_dynamic({Linear, LSTM, GRU}, qint8), weights per-tensor int8"
                               + ("; Embedding/EmbeddingBag weight-only int8, a scale per row" if embeddings else ""))
    kinds = (nn.Linear, nn.LSTM, nn.GRU, *(_EMBEDDINGS if embeddings else ()))
    for p in sorted(skip):
        info["left_float"][p] = _WHY_NONCONTIGUOUS
    for path, m in qmodel.named_modules():
        old = before.get(path)
        if old is not None and old is not type(m) and old in kinds:
            info["changed"].append(path)
        if isinstance(m, nn.MultiheadAttention):
            info["left_float"][f"{path}.out_proj" if path else "out_proj"] = _WHY_OUT_PROJ
            if m.in_proj_weight is not None:
                info["left_float"][f"{path}.in_proj_weight" if path else "in_proj_weight"] = _WHY_IN_PROJ
        elif isinstance(m, nn.TransformerEncoderLayer):
            q_inside = any(type(c) is not before.get(f"{path}.{n}" if path else n) for n, c in m.named_modules() if n)
            if q_inside and m.activation_relu_or_gelu:
                # the fused _transformer_encoder_layer_fwd fast path reads linear1/linear2.weight as tensors
                m.activation_relu_or_gelu = 0
                info["preparation"].append(
                    f"{path or '<root>'}: switched the fused fast path off (activation_relu_or_gelu=0): it reads "
                    "linear1/linear2.weight as float tensors; the layer runs its regular (slower-kernel) path"
                )
        elif isinstance(m, nn.TransformerEncoder) and getattr(m, "use_nested_tensor", False):
            m.use_nested_tensor = False
            info["preparation"].append(
                f"{path or '<root>'}: use_nested_tensor=False (the nested-tensor fast path reads the layers' .weight)"
            )
    return qmodel, info


# --------------------------------------------------------------------------- 4. structured channel pruning


def prune_channels(
    module: nn.Module,
    example_inputs: Any,
    amount: float = 0.5,
    round_to: int | None = 8,
    ignored: Iterable[str] = (),
) -> tuple[nn.Module, Info]:
    """Structured pruning: physically remove ``amount`` of the output channels of convs / hidden Linears.

    Uses Torch-Pruning's dependency graph (``torch_pruning.pruner.MetaPruner`` with
    ``MagnitudeImportance(p=2)``), so the channels of BatchNorms, consumers, residual adds and concatenations
    are removed consistently; tensors saved afterwards are smaller. The last Linear/conv called in the forward
    (the classifier / output head), MultiheadAttention modules and the module paths in ``ignored`` are kept.
    Channel counts are rounded to a multiple of ``round_to``. Returns a smaller, *untrained* model: accuracy
    needs fine-tuning.
    """
    if not 0.0 < amount < 1.0:
        raise ValueError(f"prune_channels: amount must be in (0, 1), got {amount}")
    try:
        import torch_pruning as tp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("prune_channels needs Torch-Pruning: pip install torch-pruning") from e

    model = _working_copy(module)
    info = _new_info(model)
    inputs = _as_tuple(example_inputs)
    order = _call_order(model, inputs)
    prunable = (nn.modules.conv._ConvNd, nn.Linear)
    heads = [p for p in order if isinstance(model.get_submodule(p), prunable)]
    ignored_paths: dict[str, str] = {}
    if heads:
        ignored_paths[heads[-1]] = "output layer (classifier / head): its output width is the model's output"
    for p in ignored:
        ignored_paths[p] = "ignored by request"
    for p, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            ignored_paths[p] = "attention: heads are not pruned"
    shapes_before = {
        p: tuple(m.weight.shape)
        for p, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor)
    }
    ex = inputs[0] if len(inputs) == 1 and not isinstance(inputs[0], dict) else inputs
    pruner = tp.pruner.MetaPruner(
        model,
        ex,
        forward_fn=lambda m, x: _run(m, x),
        output_transform=lambda out: list(_flat_tensors(out)),  # a ModelOutput or a KV cache among the outputs
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=amount,
        ignored_layers=[model.get_submodule(p) for p in ignored_paths],
        round_to=round_to,
    )
    pruner.step()
    del pruner
    with torch.no_grad():
        _run(model, inputs)  # the pruned model must still run
    for p, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and p in shapes_before and tuple(w.shape) != shapes_before[p]:
            info["changed"].append(p)
    info["left_float"].update(ignored_paths)
    info["preparation"].append(
        f"torch_pruning {getattr(tp, '__version__', '?')} MetaPruner, MagnitudeImportance(p=2), "
        f"pruning_ratio={amount}, round_to={round_to}; dependency graph traced on the example input; "
        "weights are not fine-tuned"
    )
    info["ops_after"] = module_histogram(model)
    return model, info
