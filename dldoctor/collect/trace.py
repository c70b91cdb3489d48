"""One traced forward pass (and one training step) at ATen dispatch level.

A single `TorchDispatchMode` sees every op once and feeds three facts at once:
MACs (attributed to every module on the call stack), output shapes per module,
and the bytes of live tensors (for peak activation memory). The pass runs on the
meta device by default: shapes and op choice are the same, nothing is allocated,
and PyTorch's fused attention fast path (invisible to other counters) is not
taken. The user's module is never changed: parameters and buffers are swapped
for stand-ins (`swapped`, once per owning module), tensors kept in plain attributes
(`AnchorGenerator.cell_anchors`, a list) are swapped for copies and every plain
attribute is put back as found (`kept_as_found`), hooks are removed and training
flags restored in `finally` blocks.
"""
from __future__ import annotations

import itertools

from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from dldoctor.collect.flops import mac_formula, no_mac_reason


@dataclass
class PassResult:
    """What one pass saw. Fields stay empty when the pass failed before reaching them."""

    macs: int = 0
    uncounted: Counter = field(default_factory=Counter)
    module_macs: dict[str, int] = field(default_factory=dict)  # inclusive of children
    module_calls: dict[str, int] = field(default_factory=dict)
    output_shapes: dict[str, list[list[int]]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # modules in order of first call
    peak_bytes: int = 0  # of tensors created during the pass (not params/inputs)
    backward_macs: int = 0
    backward_uncounted: Counter = field(default_factory=Counter)
    error: str | None = None
    error_module: str | None = None
    device: str = "meta"


class _LiveBytes:
    """Tracks bytes of storages created during a pass; a storage is freed when its weakref expires.

    Checking every live storage after every op is quadratic (a 70B-parameter model's training
    pass holds thousands). Most tensors die young, so the newest storages are checked after
    every op and the rest every `FULL_SWEEP_EVERY` ops: a long-lived storage that dies is seen
    at most that many ops late, which can only raise the reported peak, never lower it.
    Models with fewer than `YOUNG` live storages are tracked exactly.
    """

    YOUNG = 128
    FULL_SWEEP_EVERY = 32

    def __init__(self, known: set[int]) -> None:
        self.known = known  # storages that existed before (params, buffers, inputs)
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}  # insertion order = age
        self.current = 0
        self.peak = 0
        self.ops = 0

    def add(self, out: Any) -> None:
        for t in (out,) if isinstance(out, torch.Tensor) else tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_nested or t.layout != torch.strided:
                continue
            try:
                st = t.untyped_storage()
            except Exception:  # noqa: BLE001 - exotic tensor subclasses have no storage
                continue
            key = st._cdata
            if key in self.known or key in self.live:
                continue
            n = st.nbytes()
            self.live[key] = (StorageWeakRef(st), n)
            self.current += n
        self.ops += 1
        full = self.ops % self.FULL_SWEEP_EVERY == 0 or len(self.live) <= self.YOUNG
        self._sweep(full)

    def _sweep(self, full: bool = True) -> None:
        # the hot loop of a big model's pass: newest first without copying the dict, and the C check
        # called directly (StorageWeakRef.expired is a Python method around it)
        expired = torch.UntypedStorage._expired  # type: ignore[attr-defined]  # the C function itself
        items = self.live.items() if full else itertools.islice(reversed(self.live.items()), self.YOUNG)
        dead = [(k, n) for k, (ref, n) in items if expired(ref.cdata)]
        for k, n in dead:
            del self.live[k]
            self.current -= n
        if self.current > self.peak:
            self.peak = self.current


class _Mode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a dispatch mode's __torch_dispatch__ in _disable_dynamo, whose first call imports
        # torch._dynamo (3-5 s of start-up); dldoctor never runs its passes under torch.compile
        return False

    def __init__(self, result: PassResult, stack: list[str], live: _LiveBytes | None) -> None:
        super().__init__()
        self.r = result
        self.stack = stack
        self.live = live
        self.backward = False
        self.kinds: dict[Any, tuple[Any, bool]] = {}  # op -> (formula, free of MACs); looked up once per op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = self._meta_memo(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        kind = self.kinds.get(func)
        if kind is None:
            f = mac_formula(func)
            kind = self.kinds[func] = (f, f is None and no_mac_reason(func) is not None)
        m = kind[0](args, kwargs, out) // 2 if kind[0] is not None else None
        if m is None:
            if not kind[1]:
                name = func.overloadpacket.__name__
                (self.r.backward_uncounted if self.backward else self.r.uncounted)[name] += 1
        elif self.backward:
            self.r.backward_macs += m
        else:
            self.r.macs += m
            for path in set(self.stack):
                self.r.module_macs[path] = self.r.module_macs.get(path, 0) + m
        if self.live is not None:
            self.live.add(out)
        return out


    # On meta, many ops run torch's Python reference kernels (type promotion, broadcasting, stride
    # logic, convolution shape rules): a MobileNet spends most of its counting pass there. On meta an
    # op's output depends only on its inputs' metadata, so it is computed once per (op, shapes,
    # strides, dtypes, arguments) and then made with empty_strided. Only ops whose outputs are fresh
    # tensors are memoised (no views); an in-place pointwise op on same-shaped operands returns its
    # first argument, as it would.
    _memo: dict | None = None
    _kind: dict | None = None

    def _meta_memo(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if self._kind is None:
            self._kind, self._memo = {}, {}
        kind = self._kind.get(func)
        if kind is None:
            sch = func._schema
            rets = sch.returns
            if rets and all(r.alias_info is None for r in rets) and all(str(r.type) in ("Tensor", "Tensor?") for r in rets):
                kind = "fresh"
            elif (len(rets) == 1 and rets[0].alias_info is not None and rets[0].alias_info.is_write
                  and sch.name.endswith("_") and _pointwise_op(sch.name[len("aten::"):-1])):
                kind = "inplace"
            else:
                kind = ""
            self._kind[func] = kind
        if not kind or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
            return None
        if kind == "inplace":
            a0 = args[0]
            for v in (*args[1:], *kwargs.values()):
                if isinstance(v, torch.Tensor) and (not v.is_meta or (v.shape != a0.shape and v.numel() != 1)):
                    return None
            return a0
        fast = _FAST_META.get(func)
        if fast is not None:
            out = fast(*args, **kwargs)
            if out is not None:
                return out
        key: list = [func]
        for name, v in (*((None, a) for a in args), *kwargs.items()):
            h = _meta_key(v)
            if h is _NO_KEY:
                return None
            key.append((name, h))
        k = tuple(key)
        meta = self._memo.get(k)
        if meta is None:
            out = func(*args, **kwargs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if all(isinstance(o, torch.Tensor) and o.is_meta for o in outs):
                self._memo[k] = (isinstance(out, (tuple, list)), [(tuple(o.shape), o.stride(), o.dtype) for o in outs])
            return out
        made = [torch.empty_strided(sh, st, dtype=dt, device="meta") for sh, st, dt in meta[1]]
        return tuple(made) if meta[0] else made[0]


_NO_KEY = object()


def _conv_meta(x: Any, w: Any, bias: Any, stride: Any, padding: Any, dilation: Any, transposed: Any,
               output_padding: Any, groups: Any) -> Any:
    """The output of a plain (not transposed) convolution of a contiguous input, by the shape formula."""
    if transposed or not x.is_contiguous() or x.dim() != w.dim() or x.dim() < 3:
        return None
    n = x.dim() - 2
    if not (len(stride) == len(padding) == len(dilation) == n):
        return None
    spatial = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
               for i in range(n)]
    if min(spatial) <= 0 or x.shape[1] != w.shape[1] * groups:
        return None
    return torch.empty((x.shape[0], w.shape[0], *spatial), dtype=x.dtype, device="meta")


def _batch_norm_meta(x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, training: Any,
                     momentum: Any, eps: Any) -> Any:
    """native_batch_norm: the output is laid out like the input; the saved statistics are per channel."""
    if x.dim() < 2:
        return None
    c = x.shape[1]
    return (torch.empty_strided(tuple(x.shape), x.stride(), dtype=x.dtype, device="meta"),
            torch.empty((c,), dtype=torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype,
                        device="meta"),
            torch.empty((c,), dtype=torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype,
                        device="meta"))


def _grouped_mm_meta(a: Any, b: Any, offs: Any = None, bias: Any = None, out_dtype: Any = None) -> Any:
    """`_grouped_mm` in float32: the CPU kernel takes it, the meta kernel refuses it (bf16/fp16 only, as on
    CUDA), so an fp32 MoE model could not be counted on meta. Its output shape, by layout (see flops)."""
    if a.dtype != torch.float32 or b.dtype != torch.float32 or bias is not None:
        return None
    if a.dim() == 2 and b.dim() == 3:
        shape = (a.shape[0], b.shape[2])
    elif a.dim() == 3 and b.dim() == 3:
        shape = (a.shape[0], a.shape[1], b.shape[2])
    elif a.dim() == 2 and b.dim() == 2 and offs is not None:
        shape = (offs.shape[0], a.shape[0], b.shape[1])
    elif a.dim() == 3 and b.dim() == 2 and offs is not None:
        shape = (a.shape[1], b.shape[1])
    else:
        return None
    return torch.empty(shape, dtype=out_dtype or a.dtype, device="meta")


_FAST_META = {torch.ops.aten.convolution.default: _conv_meta,
              torch.ops.aten.native_batch_norm.default: _batch_norm_meta}
if hasattr(torch.ops.aten, "_grouped_mm"):
    _FAST_META[torch.ops.aten._grouped_mm.default] = _grouped_mm_meta


# elementwise activations torch does not tag pointwise (their in-place forms keep the shape all the same)
_ELEMENTWISE = frozenset({"hardswish", "hardsigmoid", "hardtanh", "silu", "gelu", "elu", "selu", "celu", "mish",
                          "leaky_relu", "rrelu", "threshold", "softplus", "relu6"})


def _pointwise_op(name: str) -> bool:
    """Is the out-of-place op `name` (e.g. "hardswish" for hardswish_) elementwise?"""
    if name in _ELEMENTWISE:
        return True
    packet = getattr(torch.ops.aten, name, None)
    op = getattr(packet, "Tensor", None) or getattr(packet, "default", None)
    return op is not None and torch.Tag.pointwise in op.tags


def _meta_key(v: Any) -> Any:
    """A hashable stand-in for an op argument on meta: a tensor's metadata, or the value itself."""
    if isinstance(v, torch.Tensor):
        return (tuple(v.shape), v.stride(), v.dtype) if v.is_meta else _NO_KEY
    if isinstance(v, (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return (type(v), v)
    if isinstance(v, (list, tuple)):
        parts = tuple(_meta_key(x) for x in v)
        return _NO_KEY if any(p is _NO_KEY for p in parts) else parts
    return _NO_KEY


def _storage_keys(tensors: list[torch.Tensor]) -> set[int]:
    keys = set()
    for t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_nested and t.layout == torch.strided:
            try:
                keys.add(t.untyped_storage()._cdata)
            except Exception:  # noqa: BLE001
                pass
    return keys


def _shapes(out: Any) -> list[list[int]]:
    return [list(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and not t.is_nested]


def _stand_ins(module: torch.nn.Module, device: str, train: bool) -> dict[str, torch.Tensor]:
    """Tensors to run the module with, so its own parameters and buffers are never touched."""
    state: dict[str, torch.Tensor] = {}
    # one stand-in per tensor: tied weights (an LM head sharing the embedding) stay tied
    for name, p in module.named_parameters():
        if device == "meta":
            t = torch.empty_like(p, device="meta")
        else:
            t = p.detach().to(device)
        state[name] = t.requires_grad_(bool(train and p.requires_grad and p.is_floating_point()))
    for name, b in module.named_buffers():
        state[name] = torch.empty_like(b, device="meta") if device == "meta" else b.detach().to(device).clone()
    return state


# what nn.Module.__init__ puts in every module's __dict__: torch's own bookkeeping, not the user's state
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
_MAX_ITEMS = 100_000  # container items walked per pass: a pathological attribute cannot make the walk slow


class _PlainState:
    """Every plain attribute of every submodule, as found, and copies of the tensors they hold.

    Parameters and buffers are swapped by `swapped`; a tensor a module keeps in a plain
    attribute (a tensor, or inside a list, tuple or dict) is not, so a pass could move it to meta
    (`self.cell_anchors = [a.to(device) ...]`), change it in place, or replace it, and the next
    pass would find it changed. Inside the block each such tensor is a copy on its own device (the
    stand-in of a parameter or buffer when it is one), so the originals are never touched; on exit
    each module's plain attributes are put back by identity, attributes the pass added are removed,
    and lists, dicts and sets reachable from them get their contents back.
    """

    def __init__(self, module: torch.nn.Module, aliases: dict[int, torch.Tensor] | None = None) -> None:
        self.dicts: list[tuple[dict, dict]] = []
        self.containers: dict[int, tuple[Any, Any]] = {}
        self.copies: dict[int, Any] = {}  # id(original) -> its stand-in (shared objects stay shared)
        self.aliases = aliases or {}
        self.items = 0
        seen: set[int] = set()
        for m in module.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            d = m.__dict__
            snap = {k: v for k, v in d.items() if k not in _MODULE_INTERNALS}
            self.dicts.append((d, snap))
            for v in snap.values():
                self._remember(v, 0)

    def _remember(self, v: Any, depth: int) -> None:
        if depth > 4 or self.items > _MAX_ITEMS or not isinstance(v, (list, dict, set, tuple)) or id(v) in self.containers:
            return
        self.items += len(v)
        if not isinstance(v, tuple):
            self.containers[id(v)] = (v, dict(v) if isinstance(v, dict) else (set(v) if isinstance(v, set) else list(v)))
        for x in v.values() if isinstance(v, dict) else v:
            self._remember(x, depth + 1)

    def _has_tensor(self, v: Any, depth: int = 0) -> bool:
        if isinstance(v, torch.Tensor):
            return True
        if depth > 4 or not isinstance(v, (list, tuple, dict)):
            return False
        return any(self._has_tensor(x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))

    def _copy(self, v: Any, depth: int = 0) -> Any:
        if id(v) in self.copies:
            return self.copies[id(v)]
        if isinstance(v, torch.Tensor):
            c = self.aliases.get(id(v))
            if c is None:
                try:
                    c = v.detach().clone()
                    if v.requires_grad and v.is_floating_point():
                        c.requires_grad_(True)
                except Exception:  # noqa: BLE001 - an exotic tensor it cannot copy stays itself
                    c = v
        elif depth > 4 or not self._has_tensor(v, depth):
            return v
        elif isinstance(v, dict):
            c = type(v)((k, self._copy(x, depth + 1)) for k, x in v.items()) if type(v) is dict else v
        elif isinstance(v, tuple) and type(v) is tuple:
            c = tuple(self._copy(x, depth + 1) for x in v)
        elif type(v) is list:
            c = [self._copy(x, depth + 1) for x in v]
        else:  # a subclass (a namedtuple, an OrderedDict...) is left as it is; restored by identity after
            return v
        self.copies[id(v)] = c
        return c

    def swap_in(self) -> list[torch.Tensor]:
        """Put copies in place of every tensor held in plain attributes; returns the copies."""
        for d, snap in self.dicts:
            for k, v in snap.items():
                if self._has_tensor(v):
                    d[k] = self._copy(v)
        return [c for c in self.copies.values() if isinstance(c, torch.Tensor)]

    def restore(self) -> None:
        for c, saved in self.containers.values():
            if isinstance(c, dict):
                if c.keys() != saved.keys() or any(c[k] is not saved[k] for k in saved):
                    c.clear()
                    c.update(saved)
            elif isinstance(c, set):
                if c != saved:
                    c.clear()
                    c.update(saved)
            elif len(c) != len(saved) or any(a is not b for a, b in zip(c, saved)):
                c[:] = saved
        for d, snap in self.dicts:
            for k in [k for k in d if k not in _MODULE_INTERNALS and k not in snap]:
                del d[k]
            for k, v in snap.items():
                if d.get(k, _NO_KEY) is not v:
                    d[k] = v


@contextmanager
def kept_as_found(module: torch.nn.Module, aliases: dict[int, torch.Tensor] | None = None) -> Iterator[list[torch.Tensor]]:
    """Inside the block, tensors in the modules' plain attributes are copies; on exit every plain
    attribute is as it was found (identity, and the contents of lists and dicts), whatever the block did.

    `aliases` maps id(parameter or buffer) to its stand-in, so an attribute holding one gets the stand-in.
    Yields the copies (their storages existed before the pass)."""
    st = _PlainState(module, aliases)
    try:
        yield st.swap_in()
    finally:
        st.restore()


def _aliases(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """id(parameter or buffer) -> its stand-in in `state`."""
    out = {}
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        if name in state:
            out[id(t)] = state[name]
    return out


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """The module in eval mode inside the block; every submodule's own flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield
    finally:
        for m, t in flags:
            m.training = t


@contextmanager
def stand_ins(module: torch.nn.Module, device: str = "meta") -> Iterator[None]:
    """Run `module` with stand-in parameters and buffers (on `device`) inside the block.

    The same swap `torch.func.functional_call` makes, for collectors that call the module
    themselves (the receptive-field pass): on meta nothing is computed or allocated.
    """
    state = _stand_ins(module, device, False)
    aliases = _aliases(module, state)
    with kept_as_found(module, aliases), swapped(module, aliases):
        yield


@contextmanager
def swapped(module: torch.nn.Module, aliases: dict[int, torch.Tensor]) -> Iterator[None]:
    """Each parameter and buffer of `module` replaced by its stand-in (`aliases`: id(original) -> stand-in) inside
    the block; every one put back afterwards, even when the block raises.

    The swap is made once per owning module and name. A module registered under two paths
    (`nn.Sequential(lin, act, lin)`) is one owner, and a weight tied to another (an LM head sharing the
    embedding) gets the same stand-in under both owners. `torch.func.functional_call` swaps per path instead and,
    for a module registered twice, puts the stand-in back in place of the user's weight (the model came out with
    plain, detached tensors for parameters, torch 2.14)."""
    saved: list[tuple[dict, str, Any]] = []
    try:
        for owner in module.modules():  # each module once, however many paths reach it
            for table in (owner._parameters, owner._buffers):
                for name, orig in list(table.items()):
                    if orig is not None and id(orig) in aliases:
                        saved.append((table, name, orig))
                        table[name] = aliases[id(orig)]
        yield
    finally:
        for table, name, orig in reversed(saved):
            table[name] = orig


def to_device(x: Any, device: str) -> Any:
    """Tensors in `x` moved to `device` (on meta: empty tensors of the same shape and dtype)."""
    return _to_device(x, device)


def _to_device(x: Any, device: str) -> Any:
    def conv(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        return torch.empty_like(t, device="meta") if device == "meta" else t.to(device)

    return tree_map(conv, x)


def training_loss(outs: list[torch.Tensor], loss: str | None) -> torch.Tensor:
    """The scalar a training step would backpropagate. With a known loss, its own temporaries
    (e.g. cross-entropy's log-softmax over the logits) count towards the memory peak."""
    import torch.nn.functional as F

    o = outs[0]
    if loss in ("ce", "contrastive") and o.is_floating_point() and o.dim() >= 2:
        logits = o.reshape(-1, o.shape[-1]) if o.dim() > 2 else o
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=o.device)
        return F.cross_entropy(logits, target)
    if loss in ("mse", "l1", "huber") and o.is_floating_point():
        fn = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}[loss]
        return fn(o, torch.zeros_like(o))
    if loss == "bce_logits" and o.is_floating_point():
        return F.binary_cross_entropy_with_logits(o, torch.zeros_like(o))
    return sum(x.float().sum() for x in outs)


class _FusedAttention(TorchFunctionMode):
    """On the meta device, send `F.scaled_dot_product_attention` down a fused kernel.

    On meta, SDPA has no fused kernel and decomposes into the math path, which
    materialises the T×T attention weights and saves them for backward. Real CPUs
    and GPUs take a fused kernel (flash / memory-efficient) that saves only the
    output and a per-row logsumexp, so the math path overstates a transformer's
    training memory by L·B·H·T² elements (1.1 GiB for GPT-2-small at 2×1024). The
    CPU flash kernel has meta kernels for forward and backward and a MAC formula,
    so it stands in; calls it cannot take (GQA, a mask it rejects) run unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and not kwargs.get("enable_gqa"):
            q, k, v, *rest = args
            names = ("attn_mask", "dropout_p", "is_causal", "scale")
            opt = {**dict(zip(names, rest)), **kwargs}
            if q.dim() == 4 and q.shape[1] == k.shape[1] == v.shape[1] and q.dtype == k.dtype == v.dtype:
                try:
                    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                        q, k, v, float(opt.get("dropout_p") or 0.0), bool(opt.get("is_causal")),
                        attn_mask=opt.get("attn_mask"), scale=opt.get("scale"))[0]
                except (RuntimeError, TypeError, ValueError):
                    pass
        return func(*args, **kwargs)


def run_pass(module: torch.nn.Module, inputs: tuple, *, device: str = "meta", train: bool = False,
             loss: str | None = None) -> PassResult:
    """Run one forward pass (and, with `train`, a backward pass of the loss) under the counter.

    The module's parameters, buffers, plain attributes (tensors in them included), grads, hooks and
    training flags are the same afterwards, whether the pass succeeds or raises; a failure is recorded
    in the result, not raised.
    """
    r = PassResult(device=device)
    stack: list[str] = []
    flags = [(m, m.training) for m in module.modules()]
    handles = []

    def pre(path: str):  # noqa: ANN202
        def hook(mod, args):  # noqa: ANN001, ANN202
            stack.append(path)
            if path not in r.module_calls and path not in r.order:
                r.order.append(path)

        return hook

    def post(path: str):  # noqa: ANN202
        def hook(mod, args, out):  # noqa: ANN001, ANN202
            if stack and stack[-1] == path:
                stack.pop()
            r.module_calls[path] = r.module_calls.get(path, 0) + 1
            if path not in r.output_shapes:
                r.output_shapes[path] = _shapes(out)

        return hook

    try:
        for path, mod in module.named_modules():
            handles.append(mod.register_forward_pre_hook(pre(path)))
            handles.append(mod.register_forward_hook(post(path)))
        module.train(train)
        state = _stand_ins(module, device, train)
        args = _to_device(inputs, device)
        aliases = _aliases(module, state)
        with ExitStack() as es:
            plain = es.enter_context(kept_as_found(module, aliases))
            live = _LiveBytes(_storage_keys(list(state.values()) + plain + tree_flatten(args)[0]))
            mode = _Mode(r, stack, live)
            if not train:
                es.enter_context(torch.no_grad())
            es.enter_context(mode)
            if device == "meta":
                es.enter_context(_FusedAttention())
            try:
                from dldoctor.collect.inputs import split_inputs  # model(*positional, **named)

                pos, named = split_inputs(args)
                with swapped(module, aliases):
                    out = module(*pos, **named)
            except Exception as e:  # noqa: BLE001 - a failing forward still yields a partial result
                r.error = f"{type(e).__name__}: {e}".strip().splitlines()[0][:500]
                r.error_module = stack[-1] if stack else None
                out = None
            if train and out is not None:
                outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor) and o.requires_grad]
                if outs:
                    mode.backward = True
                    scalar = training_loss(outs, loss)
                    try:
                        scalar.backward()
                    except Exception as e:  # noqa: BLE001
                        r.error = f"backward failed: {type(e).__name__}: {e}".splitlines()[0][:500]
                    del scalar
                del outs
            del out
            live._sweep()
            r.peak_bytes = live.peak
    finally:
        for h in handles:
            h.remove()
        for m, t in flags:
            m.training = t
    return r
