"""Receptive field of every layer, from one traced forward pass at ATen dispatch level.

Why dispatch level and not module order: the field depends on the data flow (residual
branches, concatenations, a gate computed from a global pool, `x.mean((2, 3))` written in
`forward`), and only the traced ops see that. One forward pass runs under a
`TorchDispatchMode` (and `torch.no_grad`); every tensor it produces gets an RF state, kept in
a `WeakTensorKeyDictionary` so nothing outlives the tensors.

Conventions (the "receptive-field arithmetic" of Dang Ha The Hien 2017, checked against
Araujo et al., "Computing receptive fields of convolutional neural networks", Distill 2019):

* Coordinates are input pixels, pixel `i` covering `[i, i+1)`, so its centre is `i + 0.5`.
  An input tensor starts, per spatial axis, with size `r = 1`, jump `j = 1` (distance between
  two neighbouring positions, in input pixels) and `start = 0.5` (centre of the field of its
  first position).
* A window op (convolution, max/avg pooling) with kernel `k`, stride `s`, padding `p` and
  dilation `d` (effective kernel `ke = d*(k-1) + 1`) gives
  `r' = r + (ke-1)*j`, `j' = j*s`, `start' = start + ((ke-1)/2 - p)*j`.
  A transposed convolution gives `j' = j/s`, `r' = r + (ke-1)*j'`,
  `start' = start + (p - (ke-1)/2)*j'` (an average over output positions: approximate).
* Reported: `size = r`, `stride = j`, `padding = r/2 - start`: the textbook *effective
  padding*, how far the field of the first position reaches before the input's first pixel
  (`sum_l p_l * prod_{i<l} s_i` for a plain chain).
* Where paths join (add, mul, cat, where...), the field is the union over the inputs: per
  axis, from the leftmost left edge to the rightmost right edge of the first position's
  field, which is the largest field when the paths are centred (ResNet, Inception).
* An op that mixes every position along a spatial axis makes a tensor *global*: a mean,
  sum, max, softmax... over a spatial dim, an adaptive pool to size 1, a matrix product that
  contracts a dim holding spatial positions (flatten -> linear, attention), fused attention.
  A global input makes the output global (a squeeze-and-excitation gate makes the block
  global). A global tensor still carries the field of its convolution stack, reported as
  "the last spatial feature map" by the overall result.
* Normalisation statistics (batch, layer, group, instance norm) are treated as constants, as
  in the textbook arithmetic: they pass the field through.
* Adaptive pooling to `out > 1` positions from `in`: stride `in/out`, kernel = the largest
  window PyTorch uses (`ceil((i+1)*in/out) - floor(i*in/out)`), first window centred at
  `(ceil(in/out) - 1)/2`; exact when `in` divides by `out`.
* Resampling: nearest keeps `r`, sets `j' = j*in/out`; (bi/tri)linear adds one input step
  (`r' = r + j`), bicubic three, on a half-pixel grid (`start' = start + (in/out - 1)/2*j`);
  `align_corners=True` uses `j' = j*(in-1)/(out-1)`. Linear modes are marked approximate.
* Layout is tracked per tensor dim as a list of factors ("atoms"): a flatten keeps which
  dims hold which spatial axes, so `flatten -> linear` is global, `view` back to a grid
  restores it, and a channels-last `permute` (ConvNeXt) is followed exactly.
* An op with no rule that touches a tensor with located spatial positions is counted in
  `skipped_ops` and makes every field depending on it `partial` (a lower bound): it passes
  the union of its inputs' fields through.

Not handled (counted as skipped when they touch spatial positions): `roll`/`flip`/gather/
advanced indexing along spatial dims, `grid_sample`, `im2col`/`col2im`, fractional pooling,
cumulative ops along spatial dims, convolution or pooling over a dim that was merged or
split by a reshape (Swin window partition), concatenation along a spatial grid, recurrent
layers over a spatial dim. An in-place write into a view (`out[..., :h, :w] = x`) updates the
base tensor (matched by strides); views of that base taken earlier keep their old state.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

from dldoctor.report.types import COMPLETE, PARTIAL, UNAVAILABLE, ReceptiveField

__all__ = ["RFResult", "receptive_field"]

aten = torch.ops.aten
Tensor = torch.Tensor

# One factor of a tensor dim: the spatial input axes folded into it (empty: batch/channel/
# features) and its size. A dim's atoms multiply to its size; a plain grid dim is one atom
# holding one axis.
Atom = tuple[frozenset, int]
_NOAX: frozenset = frozenset()


@dataclass
class RFResult:
    overall: ReceptiveField
    per_module: dict[str, ReceptiveField] = field(default_factory=dict)
    skipped_ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Axis:
    r: Fraction  # size of the field, input pixels
    j: Fraction  # jump: distance between neighbouring positions, input pixels
    start: Fraction  # centre of the first position's field, input pixels (0.5 = centre of pixel 0)


@dataclass(frozen=True)
class _State:
    axes: tuple[_Axis, ...]  # one per spatial axis of the input
    dims: tuple[tuple[Atom, ...], ...]  # one per tensor dim
    split: frozenset = _NOAX  # axes cut across several dims: one dim holds only part of the axis
    inexact: frozenset = _NOAX  # axes whose positions no longer form a plain grid
    glob: str | None = None  # op that made every output depend on the whole input
    skipped: frozenset = _NOAX  # ops without a rule in this tensor's history
    approx: frozenset = _NOAX  # approximate rules in this tensor's history


_ONE, _HALF = Fraction(1), Fraction(1, 2)
_SEED_AXIS = _Axis(_ONE, _ONE, _HALF)


# -- layout helpers ----------------------------------------------------------------------------

def _plain(n: int) -> tuple[Atom, ...]:
    return ((_NOAX, int(n)),) if int(n) != 1 else ()


def _axes_in(atoms: Iterable[Atom]) -> frozenset:
    out: frozenset = _NOAX
    for ax, _ in atoms:
        if ax:
            out = out | ax
    return out


def _located(st: _State) -> frozenset:
    return _axes_in(a for d in st.dims for a in d)


def _holders(st: _State, k: int) -> list[int]:
    return [d for d, atoms in enumerate(st.dims) if k in _axes_in(atoms)]


def _exact(st: _State, d: int) -> int | None:
    """The axis dim `d` holds as a plain grid, alone and whole, else None."""
    atoms = st.dims[d]
    if len(atoms) != 1 or len(atoms[0][0]) != 1:
        return None
    (k,) = atoms[0][0]
    if k in st.split or k in st.inexact or _holders(st, k) != [d]:
        return None
    return k


def _contract(st: _State, ds: Iterable[int]) -> tuple[bool, bool]:
    """Mixing every position of dims `ds`: (makes the output global, outcome unknown)."""
    ds = set(ds)
    glob = unknown = False
    for k in _axes_in(a for d in ds if 0 <= d < len(st.dims) for a in st.dims[d]):
        if k not in st.split or set(_holders(st, k)) <= ds:
            glob = True
        else:  # only part of a split axis is mixed: neither local nor global
            unknown = True
    return glob, unknown


def _coalesce(atoms: Sequence[Atom]) -> tuple[Atom, ...]:
    out: list[Atom] = []
    for ax, n in atoms:
        if n == 1 and not ax:
            continue
        if out and not ax and not out[-1][0]:
            out[-1] = (_NOAX, out[-1][1] * n)
        else:
            out.append((ax, n))
    return tuple(out)


def _union_atoms(candidates: Sequence[tuple[Atom, ...]], n: int) -> tuple[tuple[Atom, ...], frozenset]:
    """Layout of one output dim fed by several inputs: (atoms, axes whose layout conflicts)."""
    seen = [a for a in candidates if _axes_in(a)]  # a dim holding no positions adds no layout
    if not seen:
        return _plain(n), _NOAX
    first = seen[0]
    if all(a == first for a in seen):
        return first, _NOAX
    ax = _axes_in(x for a in seen for x in a)
    return (((ax, int(n)),) if ax else _plain(n)), ax


def _norm_dim(d: int, nd: int) -> int:
    d = int(d)
    return d + nd if d < 0 else d


def _ints(v: Any, n: int, default: int) -> list[int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return [default] * n
    if isinstance(v, (list, tuple)):
        v = [int(x) for x in v]
        return v * n if len(v) == 1 else v[:n]
    return [int(v)] * n


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


# -- joining paths -----------------------------------------------------------------------------

def _union_axes(all_axes: Sequence[tuple[_Axis, ...]]) -> tuple[tuple[_Axis, ...], bool]:
    first = all_axes[0]
    if all(a == first for a in all_axes):
        return first, False
    out, mismatch = [], False
    for xs in zip(*all_axes):
        left = min(a.start - a.r / 2 for a in xs)
        right = max(a.start + a.r / 2 for a in xs)
        js = {a.j for a in xs}
        mismatch = mismatch or len(js) > 1
        out.append(_Axis(right - left, max(js), (left + right) / 2))
    return tuple(out), mismatch


def _combine(states: Sequence[_State], op: str) -> _State:
    """Union of the fields and histories of `states`; dims are the first one's."""
    if len(states) == 1:
        return states[0]
    axes, mismatch = _union_axes([s.axes for s in states])
    approx = frozenset().union(*(s.approx for s in states))
    if mismatch:
        approx = approx | {f"{op} (joins paths at different strides)"}
    return _State(
        axes=axes,
        dims=states[0].dims,
        split=frozenset().union(*(s.split for s in states)),
        inexact=frozenset().union(*(s.inexact for s in states)),
        glob=next((s.glob for s in states if s.glob), None),
        skipped=frozenset().union(*(s.skipped for s in states)),
        approx=approx,
    )


def _broadcast(parts: Sequence[tuple[tuple[int, ...], _State]], shape: tuple[int, ...], op: str) -> _State:
    """Element-wise op: inputs broadcast (aligned from the right) to `shape`."""
    base = _combine([s for _, s in parts], op)
    nd = len(shape)
    cands: list[list[tuple[Atom, ...]]] = [[] for _ in range(nd)]
    for ishape, st in parts:
        off = nd - len(ishape)
        for d, atoms in enumerate(st.dims[: len(ishape)]):
            od = d + off
            if 0 <= od < nd and ishape[d] == shape[od]:  # a broadcast (size-1) dim adds no layout
                cands[od].append(atoms)
    dims, bad = [], set()
    for od in range(nd):
        atoms, b = _union_atoms(cands[od], shape[od])
        dims.append(atoms)
        bad |= b
    return replace(base, dims=tuple(dims), inexact=base.inexact | frozenset(bad))


# -- one op call -------------------------------------------------------------------------------

def _bind(func: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out[arg.name] = args[i]
        elif arg.name in kwargs:
            out[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    return out


class _Call:
    """What a rule sees of one op call: bound arguments, input states and shapes, outputs."""

    def __init__(self, tracker: _Tracker, func: Any, args: tuple, kwargs: dict,
                 ins: list[tuple[Tensor, _State, tuple[int, ...]]], outs: list[Tensor]) -> None:
        self.tracker = tracker
        self.func = func
        self.op = str(func.overloadpacket)
        self.a = _bind(func, args, kwargs)
        self.ins = ins
        self.outs = outs
        self._skipped = False
        self._shapes = {id(t): s for t, _, s in ins}

    def st(self, t: Any) -> _State | None:
        if not isinstance(t, Tensor):
            return None
        for u, s, _ in self.ins:
            if u is t:
                return s
        return None

    def shape(self, t: Tensor) -> tuple[int, ...]:
        """Shape before the op ran (an in-place view op changes it)."""
        return self._shapes.get(id(t), _shape(t))

    def x(self) -> Tensor | None:
        for name in ("self", "input"):
            if isinstance(self.a.get(name), Tensor):
                return self.a[name]
        return self.ins[0][0] if self.ins else None

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return _shape(self.outs[i])

    def skip(self) -> frozenset:
        if not self._skipped:
            self._skipped = True
            self.tracker.skipped[self.op] += 1
        return frozenset({self.op})

    def others(self, main: Any) -> list[_State]:
        return [s for t, s, _ in self.ins if t is not main]

    def with_others(self, st: _State, main: Any) -> _State:
        """Fold in stateful side inputs (a conv weight or norm scale computed from the input)."""
        extra = self.others(main)
        return replace(_combine([st, *extra], self.op), dims=st.dims) if extra else st


_HANDLERS: dict[Any, Callable[[_Call], Any]] = {}


def _on(*names: str) -> Callable:
    def deco(fn: Callable[[_Call], Any]) -> Callable[[_Call], Any]:
        for name in names:
            try:
                packet = getattr(aten, name)
            except (AttributeError, RuntimeError):
                continue  # not in this torch version
            _HANDLERS[packet] = fn
        return fn

    return deco


# -- rules: pass-through and element-wise --------------------------------------------------------

def _pointwise(c: _Call) -> _State:
    return _broadcast([(s, st) for _, st, s in c.ins], c.out_shape(), c.op)


_on("hardswish", "hardswish_", "_prelu_kernel", "prelu", "native_dropout", "dropout", "feature_dropout",
    "alpha_dropout", "_to_copy", "to", "detach", "detach_", "alias", "lift_fresh", "lift_fresh_copy",
    "contiguous", "_conj", "resolve_conj", "resolve_neg", "log_sigmoid_forward", "rrelu_with_noise",
    "celu", "selu", "_masked_scale", "masked_fill_", "type_as")(_pointwise)


@_on("empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
     "new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided", "scalar_tensor", "_shape_as_tensor")
def _no_dependence(c: _Call) -> None:
    return None  # values do not depend on the input's values


@_on("copy_", "copy", "fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_")
def _overwrite(c: _Call) -> _State | None:
    dst = c.x()
    parts = [(s, st) for t, st, s in c.ins if t is not dst]
    return _broadcast(parts, c.out_shape(), c.op) if parts else None


@_on("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
     "_native_batch_norm_legit_functional", "batch_norm", "_batch_norm_with_update", "_batch_norm_no_update",
     "cudnn_batch_norm", "miopen_batch_norm", "native_layer_norm", "layer_norm", "native_group_norm",
     "group_norm", "instance_norm", "rms_norm", "_fused_rms_norm")
def _norm(c: _Call) -> _State | None:
    # Statistics are treated as constants (textbook convention): the field passes through.
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    return c.with_others(sx, x)


# -- rules: fallback ---------------------------------------------------------------------------

def _fallback(c: _Call) -> list[_State | None]:
    """No rule: pass the union through, and count the op if it touched spatial positions."""
    states = [st for _, st, _ in c.ins]
    base = _combine(states, c.op)
    if any(_located(st) for st in states):
        base = replace(base, skipped=base.skipped | c.skip())
    out: list[_State | None] = []
    for o in c.outs:
        shape = _shape(o)
        same = next((st for _, st, s in c.ins if s == shape), None)
        dims = same.dims if same is not None else tuple(_plain(n) for n in shape)
        out.append(replace(base, dims=dims))
    return out


# -- rules: windows (convolution, pooling) -------------------------------------------------------

AxisRule = Callable[[_Axis], _Axis]


def _conv_rule(ke: int, s: Fraction | int, p: Fraction | int) -> AxisRule:
    def rule(a: _Axis) -> _Axis:
        return _Axis(a.r + (ke - 1) * a.j, a.j * s, a.start + (Fraction(ke - 1, 2) - p) * a.j)

    return rule


def _tconv_rule(ke: int, s: int, p: int) -> AxisRule:
    def rule(a: _Axis) -> _Axis:
        j = a.j / s
        return _Axis(a.r + (ke - 1) * j, j, a.start + (p - Fraction(ke - 1, 2)) * j)

    return rule


def _window(c: _Call, st: _State, ishape: tuple[int, ...], oshape: tuple[int, ...],
            rules: Sequence[AxisRule], contract: int | None = None) -> _State:
    """Apply per-axis rules to the last len(rules) dims; `contract` is a dim mixed entirely."""
    nd, n = len(ishape), len(rules)
    if len(oshape) != nd or n > nd:
        return _fallback(c)[0]
    axes, dims = list(st.axes), list(st.dims)
    glob, skipped, inexact = st.glob, st.skipped, set(st.inexact)
    if contract is not None and 0 <= contract < nd - n:
        g, u = _contract(st, [contract])
        glob = glob or (c.op if g else None)
        if u:
            skipped = skipped | c.skip()
        dims[contract] = _plain(oshape[contract])
    for i, rule in enumerate(rules):
        d = nd - n + i
        sp = _axes_in(st.dims[d])
        if not sp:
            dims[d] = _plain(oshape[d])
            continue
        k = _exact(st, d)
        if k is None:  # a window over merged or split positions: no rule
            skipped = skipped | c.skip()
            inexact |= sp
            dims[d] = ((sp, oshape[d]),)
            continue
        axes[k] = rule(axes[k])
        dims[d] = ((frozenset({k}), oshape[d]),)
    for d in range(nd - n):
        if d != contract and oshape[d] != ishape[d]:
            dims[d] = _plain(oshape[d]) if not _axes_in(dims[d]) else ((_axes_in(dims[d]), oshape[d]),)
    return replace(st, axes=tuple(axes), dims=tuple(dims), glob=glob, skipped=skipped, inexact=frozenset(inexact))


@_on("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
     "conv_transpose3d", "mkldnn_convolution", "cudnn_convolution", "cudnn_convolution_transpose",
     "miopen_convolution", "miopen_depthwise_convolution", "miopen_convolution_transpose",
     "convolution_overrideable", "_slow_conv2d_forward", "slow_conv3d_forward", "slow_conv_dilated2d",
     "slow_conv_dilated3d", "slow_conv_transpose2d", "slow_conv_transpose3d", "thnn_conv2d",
     "_nnpack_spatial_convolution", "mps_convolution", "_convolution_mode", "_mps_convolution")
def _conv(c: _Call) -> _State | list[_State | None] | None:
    x, w = c.x(), c.a.get("weight")
    sx = c.st(x)
    if sx is None or not isinstance(w, Tensor) or w.ndim < 3:
        return _fallback(c)
    n = w.ndim - 2
    k = [int(s) for s in w.shape[2:]]
    stride = _ints(c.a.get("stride"), n, 1)
    dil = _ints(c.a.get("dilation"), n, 1)
    ke = [d * (kk - 1) + 1 for d, kk in zip(dil, k)]
    pad = c.a.get("padding")
    if isinstance(pad, str):  # "valid" / "same" (symmetric part; PyTorch pads the odd pixel at the end)
        pad = [0] * n if pad == "valid" else [(e - 1) // 2 for e in ke]
    else:
        pad = _ints(pad, n, 0)
    transposed = bool(c.a.get("transposed", False)) or "transpose" in c.op
    make = _tconv_rule if transposed else _conv_rule
    rules = [make(e, s, p) for e, s, p in zip(ke, stride, pad)]
    ishape = c.shape(x)
    out = _window(c, sx, ishape, c.out_shape(), rules, contract=len(ishape) - n - 1)
    if transposed and out.axes != sx.axes:
        out = replace(out, approx=out.approx | {f"{c.op} (transposed)"})
    return c.with_others(out, x)


def _pool(n: int, dilated: bool) -> Callable[[_Call], Any]:
    def rule(c: _Call) -> _State | list[_State | None] | None:
        x = c.x()
        sx = c.st(x)
        if sx is None:
            return _fallback(c)
        k = _ints(c.a.get("kernel_size"), n, 1)
        s = c.a.get("stride")
        s = k if not s else _ints(s, n, 1)  # stride defaults to the kernel
        p = _ints(c.a.get("padding"), n, 0)
        d = _ints(c.a.get("dilation"), n, 1) if dilated else [1] * n
        rules = [_conv_rule(di * (ki - 1) + 1, si, pi) for ki, si, pi, di in zip(k, s, p, d)]
        return c.with_others(_window(c, sx, c.shape(x), c.out_shape(), rules), x)

    return rule


for _n in (1, 2, 3):
    _on(f"max_pool{_n}d", f"max_pool{_n}d_with_indices", f"mkldnn_max_pool{_n}d", f"quantized_max_pool{_n}d")(
        _pool(_n, True))
    _on(f"avg_pool{_n}d", f"mkldnn_avg_pool{_n}d")(_pool(_n, False))


def _adaptive(n: int) -> Callable[[_Call], Any]:
    def rule(c: _Call) -> _State | list[_State | None] | None:
        x = c.x()
        sx = c.st(x)
        if sx is None:
            return _fallback(c)
        ishape, oshape = c.shape(x), c.out_shape()
        nd = len(ishape)
        if len(oshape) != nd or nd < n:
            return _fallback(c)
        axes, dims = list(sx.axes), list(sx.dims)
        glob, skipped, approx, inexact = sx.glob, sx.skipped, sx.approx, set(sx.inexact)
        for i in range(n):
            d = nd - n + i
            size_in, size_out = ishape[d], oshape[d]
            sp = _axes_in(sx.dims[d])
            if not sp:
                dims[d] = _plain(size_out)
                continue
            if size_out == 1:  # global pooling along this axis: the local field stays
                g, u = _contract(sx, [d])
                glob = glob or (c.op if g else None)
                if u:
                    skipped = skipped | c.skip()
                dims[d] = ()
                continue
            if size_in == size_out:
                continue
            k = _exact(sx, d)
            if k is None:
                skipped = skipped | c.skip()
                inexact |= sp
                dims[d] = ((sp, size_out),)
                continue
            # PyTorch's windows: [floor(o*in/out), ceil((o+1)*in/out)).
            kmax = max(-(-(o + 1) * size_in // size_out) - (o * size_in // size_out) for o in range(size_out))
            k0 = -(-size_in // size_out)
            a = axes[k]
            axes[k] = _Axis(a.r + (kmax - 1) * a.j, a.j * Fraction(size_in, size_out),
                            a.start + Fraction(k0 - 1, 2) * a.j)
            if size_in % size_out:
                approx = approx | {f"{c.op} (uneven windows)"}
            dims[d] = ((frozenset({k}), size_out),)
        st = replace(sx, axes=tuple(axes), dims=tuple(dims), glob=glob, skipped=skipped, approx=approx,
                     inexact=frozenset(inexact))
        return c.with_others(st, x)

    return rule


for _n in (1, 2, 3):
    _on(f"_adaptive_avg_pool{_n}d", f"adaptive_avg_pool{_n}d", f"adaptive_max_pool{_n}d",
        f"mkldnn_adaptive_avg_pool{_n}d")(_adaptive(_n))


def _resample(n: int, mode: str, taps: int, aa: bool = False) -> Callable[[_Call], Any]:
    """Upsampling/interpolation: `taps` input positions feed one output position."""

    def rule(c: _Call) -> _State | list[_State | None] | None:
        x = c.x()
        sx = c.st(x)
        if sx is None:
            return _fallback(c)
        ishape, oshape = c.shape(x), c.out_shape()
        corners = bool(c.a.get("align_corners") or False)

        def make(size_in: int, size_out: int) -> AxisRule:
            ratio = Fraction(size_in, size_out)

            def axis_rule(a: _Axis) -> _Axis:
                if corners and size_out > 1:
                    j, start = a.j * Fraction(size_in - 1, size_out - 1), a.start
                else:
                    j = a.j * ratio
                    if mode == "nearest":  # source index floor(o*in/out): output 0 is input 0
                        start = a.start
                    elif mode == "nearest_exact":  # floor((o+0.5)*in/out)
                        start = a.start + math.floor(ratio / 2) * a.j
                    else:  # half-pixel grid
                        start = a.start + (ratio - 1) / 2 * a.j
                extra = (taps - 1) * (max(ratio, _ONE) if aa else _ONE)
                return _Axis(a.r + extra * a.j, j, start)

            return axis_rule

        nd = len(ishape)
        if len(oshape) != nd or nd < n:
            return _fallback(c)
        rules = [make(ishape[d], oshape[d]) for d in range(nd - n, nd)]
        st = _window(c, sx, ishape, oshape, rules)
        if taps > 1 and st.axes != sx.axes:
            st = replace(st, approx=st.approx | {f"{c.op} (interpolation on a regular grid)"})
        return c.with_others(st, x)

    return rule


for _n, _lin in ((1, "linear"), (2, "bilinear"), (3, "trilinear")):
    _on(f"upsample_nearest{_n}d")(_resample(_n, "nearest", 1))
    _on(f"_upsample_nearest_exact{_n}d")(_resample(_n, "nearest_exact", 1))
    _on(f"upsample_{_lin}{_n}d")(_resample(_n, "linear", 2))
_on("_upsample_bilinear2d_aa")(_resample(2, "linear", 2, aa=True))
_on("upsample_bicubic2d")(_resample(2, "linear", 4))
_on("_upsample_bicubic2d_aa")(_resample(2, "linear", 4, aa=True))


@_on("pixel_shuffle", "pixel_unshuffle")
def _pixel_shuffle(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    ishape = c.shape(x)
    if sx is None or len(ishape) < 3 or _axes_in(sx.dims[len(ishape) - 3]):
        return _fallback(c)
    if c.op.endswith("unshuffle"):  # each output gathers an f x f block: a window f, stride f
        f = int(c.a.get("downscale_factor"))
        rules = [_conv_rule(f, f, 0)] * 2
    else:  # each output position is one input position: j / f, output 0 is input 0
        f = int(c.a.get("upscale_factor"))
        rules = [lambda a: _Axis(a.r, a.j / f, a.start)] * 2
    oshape = c.out_shape()
    st = _window(c, sx, ishape, oshape, rules)
    dims = list(st.dims)
    dims[len(ishape) - 3] = _plain(oshape[len(ishape) - 3])
    return replace(st, dims=tuple(dims))


@_on("unfold")
def _unfold(c: _Call) -> _State | list[_State | None] | None:
    """Tensor.unfold(dim, size, step): sliding windows; the window offset dim adds no layout."""
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape, oshape = c.shape(x), c.out_shape()
    d = _norm_dim(c.a["dimension"], len(ishape)) if ishape else 0
    dims = list(sx.dims)
    axes = list(sx.axes)
    if ishape:
        k = _exact(sx, d)
        if _axes_in(sx.dims[d]) and k is None:
            return _fallback(c)
        if k is not None:
            axes[k] = _conv_rule(int(c.a["size"]), int(c.a["step"]), 0)(axes[k])
            dims[d] = ((frozenset({k}), oshape[d]),)
        else:
            dims[d] = _plain(oshape[d])
    dims.append(_plain(oshape[-1]))
    return replace(sx, axes=tuple(axes), dims=tuple(dims))


# -- rules: reductions and other mixing ops -----------------------------------------------------

def _reduce_dims(c: _Call, st: _State, ishape: tuple[int, ...], ds: list[int]) -> list[_State | None]:
    g, u = _contract(st, ds)
    glob = st.glob or (c.op if g else None)
    skipped = st.skipped | (c.skip() if u else _NOAX)
    nd = len(ishape)
    out: list[_State | None] = []
    for o in c.outs:
        oshape = _shape(o)
        if len(oshape) == nd:  # keepdim, or sort/softmax along the dim
            dims = tuple(st.dims[d] if oshape[d] == ishape[d] else _plain(oshape[d]) for d in range(nd))
        elif len(oshape) == nd - len(set(ds)):
            dims = tuple(st.dims[d] for d in range(nd) if d not in ds)
        else:
            dims = tuple(_plain(n) for n in oshape)
        out.append(replace(st, dims=dims, glob=glob, skipped=skipped))
    return out


@_on("sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean", "logsumexp",
     "norm", "linalg_vector_norm", "argmax", "argmin", "any", "all", "nansum", "nanmean", "count_nonzero",
     "median", "nanmedian", "mode", "kthvalue", "sort", "argsort", "topk", "msort", "aminmax",
     "_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax", "special_softmax",
     "special_log_softmax")
def _reduce(c: _Call) -> _State | list[_State | None] | None:
    if isinstance(c.a.get("other"), Tensor):  # max.other / min.other: element-wise
        return _pointwise(c)
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape = c.shape(x)
    nd = len(ishape)
    dim = c.a.get("dim")
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        ds = list(range(nd))
    else:
        ds = [_norm_dim(d, max(nd, 1)) for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
    ds = [d for d in ds if 0 <= d < nd]
    return [c.with_others(s, x) if s else s for s in _reduce_dims(c, sx, ishape, ds)]


@_on("cumsum", "cumsum_", "cumprod", "cumprod_", "cummax", "cummin", "logcumsumexp")
def _cumulative(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    ishape = c.shape(x) if x is not None else ()
    if sx is None or not ishape:
        return _fallback(c)
    if _axes_in(sx.dims[_norm_dim(c.a["dim"], len(ishape))]):
        return _fallback(c)  # a running total over positions has no window rule
    return [c.with_others(sx, x)] * len(c.outs)


@_on("glu")
def _glu(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape = c.shape(x)
    d = _norm_dim(c.a.get("dim", -1), len(ishape))
    if _axes_in(sx.dims[d]):
        return _fallback(c)
    dims = list(sx.dims)
    dims[d] = _plain(c.out_shape()[d])
    return replace(sx, dims=tuple(dims))


# -- rules: layout (views, permutes, slicing, joining) -------------------------------------------

def _reshape(st: _State, ishape: tuple[int, ...], oshape: tuple[int, ...]) -> _State:
    if ishape == oshape:
        return st
    flat: list[Atom] = []
    for d, atoms in enumerate(st.dims[: len(ishape)]):
        if math.prod(n for _, n in atoms) != ishape[d]:
            atoms = ((_axes_in(atoms), ishape[d]),)
        flat.extend(atoms)
    flat = [a for a in _coalesce(flat) if a[1] != 1]  # size-1 factors carry no positions
    queue = flat[::-1]
    split = set(st.split)
    dims: list[tuple[Atom, ...]] = []
    ok = True
    for n in oshape:
        got: list[Atom] = []
        need = n
        while need > 1 and ok:
            if not queue:
                ok = False
                break
            ax, m = queue.pop()
            if need % m == 0:
                got.append((ax, m))
                need //= m
            elif m % need == 0:  # this output dim takes the outer part of a factor
                got.append((ax, need))
                queue.append((ax, m // need))
                split |= ax
                need = 1
            else:
                ok = False
        dims.append(_coalesce(got))
    if ok and not queue:
        return replace(st, dims=tuple(dims), split=frozenset(split))
    lost = _located(st)  # sizes do not factor: every output dim may hold any axis
    return replace(st, dims=tuple(((lost, n),) if lost and n != 1 else _plain(n) for n in oshape),
                   split=st.split | lost, inexact=st.inexact | lost)


@_on("view", "_unsafe_view", "reshape", "_reshape_alias", "view_copy", "_reshape_copy", "unsafe_view",
     "flatten", "unflatten", "view_as", "reshape_as", "_reshape_alias_copy")
def _view(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    return _reshape(sx, c.shape(x), c.out_shape())


@_on("permute", "permute_copy")
def _permute(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    nd = len(c.shape(x))
    perm = [_norm_dim(d, nd) for d in c.a["dims"]]
    return replace(sx, dims=tuple(sx.dims[p] for p in perm))


@_on("transpose", "transpose_", "transpose_copy", "t", "t_", "swapaxes", "swapdims", "numpy_T")
def _transpose(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    nd = len(c.shape(x))
    if nd < 2:
        return sx
    if "dim0" in c.a and c.a["dim0"] is not None:
        d0, d1 = _norm_dim(c.a["dim0"], nd), _norm_dim(c.a["dim1"], nd)
    elif "axis0" in c.a:
        d0, d1 = _norm_dim(c.a["axis0"], nd), _norm_dim(c.a["axis1"], nd)
    else:
        d0, d1 = nd - 2, nd - 1  # t / .T
    dims = list(sx.dims)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return replace(sx, dims=tuple(dims))


@_on("squeeze", "squeeze_", "squeeze_copy")
def _squeeze(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape, oshape = c.shape(x), c.out_shape()
    nd = len(ishape)
    dim = c.a.get("dim")
    if dim is None:
        ds = set(range(nd))
    else:
        ds = {_norm_dim(d, max(nd, 1)) for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
    dims = tuple(sx.dims[d] for d in range(nd) if not (d in ds and ishape[d] == 1))
    return replace(sx, dims=dims) if len(dims) == len(oshape) else _fallback(c)


@_on("unsqueeze", "unsqueeze_", "unsqueeze_copy")
def _unsqueeze(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    d = _norm_dim(c.a["dim"], len(c.shape(x)) + 1)
    dims = list(sx.dims)
    dims.insert(d, ())
    return replace(sx, dims=tuple(dims))


@_on("expand", "expand_copy", "expand_as", "broadcast_to")
def _expand(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    return _broadcast([(c.shape(x), sx)], c.out_shape(), c.op)


def _slice_state(c: _Call, st: _State, ishape: tuple[int, ...], d: int, begin: int, step: int, n_out: int) -> _State:
    if n_out == ishape[d] and step == 1:
        return st
    sp = _axes_in(st.dims[d])
    dims = list(st.dims)
    if not sp:
        dims[d] = _plain(n_out)
        return replace(st, dims=tuple(dims))
    k = _exact(st, d)
    if k is None:  # part of a flattened/merged dim (e.g. dropping a class token)
        dims[d] = ((sp, n_out),)
        return replace(st, dims=tuple(dims), inexact=st.inexact | sp)
    axes = list(st.axes)
    a = axes[k]
    axes[k] = _Axis(a.r, a.j * step, a.start + begin * a.j)  # a crop moves the first position
    dims[d] = ((frozenset({k}), n_out),)
    return replace(st, axes=tuple(axes), dims=tuple(dims))


@_on("slice", "slice_copy")
def _slice(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape = c.shape(x)
    d = _norm_dim(c.a.get("dim", 0), len(ishape))
    size = ishape[d]
    begin = c.a.get("start")
    begin = 0 if begin is None else int(begin)
    if begin < 0:
        begin += size
    begin = min(max(begin, 0), size)
    step = int(c.a.get("step") or 1)
    return _slice_state(c, sx, ishape, d, begin, step, c.out_shape()[d])


@_on("narrow", "narrow_copy")
def _narrow(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None or isinstance(c.a.get("start"), Tensor):
        return _fallback(c)
    ishape = c.shape(x)
    d = _norm_dim(c.a["dim"], len(ishape))
    begin = int(c.a["start"])
    begin = begin + ishape[d] if begin < 0 else begin
    return _slice_state(c, sx, ishape, d, begin, 1, c.out_shape()[d])


def _select_state(st: _State, ishape: tuple[int, ...], d: int, idx: int) -> _State:
    idx = idx + ishape[d] if idx < 0 else idx
    axes = list(st.axes)
    inexact = st.inexact
    k = _exact(st, d)
    if k is not None:
        a = axes[k]
        axes[k] = _Axis(a.r, a.j, a.start + idx * a.j)
    elif _axes_in(st.dims[d]):
        inexact = inexact | _axes_in(st.dims[d])
    return replace(st, axes=tuple(axes), dims=st.dims[:d] + st.dims[d + 1:], inexact=inexact)


@_on("select", "select_copy")
def _select(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape = c.shape(x)
    return _select_state(sx, ishape, _norm_dim(c.a["dim"], len(ishape)), int(c.a["index"]))


@_on("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "split_copy",
     "split_with_sizes_copy", "chunk", "tensor_split")
def _split(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None or "indices" in c.a or "tensor_indices_or_sections" in c.a:
        return _fallback(c)
    ishape = c.shape(x)
    d = _norm_dim(c.a.get("dim", 0), len(ishape))
    out, begin = [], 0
    for o in c.outs:
        n = int(o.shape[d])
        out.append(_slice_state(c, sx, ishape, d, begin, 1, n))
        begin += n
    return out


@_on("unbind", "unbind_copy")
def _unbind(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    ishape = c.shape(x)
    d = _norm_dim(c.a.get("dim", 0), len(ishape))
    return [_select_state(sx, ishape, d, i) for i in range(len(c.outs))]


def _join(c: _Call, tensors: Sequence[Any], d: int, nd_out: int, new_dim: bool) -> _State | list[_State | None] | None:
    parts = [(t, c.st(t)) for t in tensors if isinstance(t, Tensor)]
    parts = [(t, s) for t, s in parts if s is not None and (len(c.shape(t)) == (nd_out - 1 if new_dim else nd_out))]
    if not parts:
        return _fallback(c)
    base = _combine([s for _, s in parts], c.op)
    oshape = c.out_shape()
    nd_in = nd_out - 1 if new_dim else nd_out
    dims: list[tuple[Atom, ...]] = []
    bad: set = set()
    skipped = base.skipped
    for e in range(nd_in):
        oe = e + 1 if (new_dim and e >= d) else e
        cands = [s.dims[e] for _, s in parts]
        if not new_dim and e == d:  # the joined dim
            sp = _axes_in(a for atoms in cands for a in atoms)
            if sp:
                bad |= sp
                if any(_exact(s, d) is not None for _, s in parts):  # joining two grids: no rule
                    skipped = skipped | c.skip()
                dims.append(((sp, oshape[oe]),))
            else:
                dims.append(_plain(oshape[oe]))
            continue
        atoms, b = _union_atoms(cands, oshape[oe])
        bad |= b
        dims.append(atoms)
    if new_dim:
        dims.insert(d, _plain(oshape[d]))
    return replace(base, dims=tuple(dims), inexact=base.inexact | frozenset(bad), skipped=skipped)


@_on("cat", "concat", "concatenate", "_cat")
def _cat(c: _Call) -> _State | list[_State | None] | None:
    nd = len(c.out_shape())
    return _join(c, c.a["tensors"], _norm_dim(c.a.get("dim", 0), nd), nd, new_dim=False)


@_on("stack", "_stack")
def _stack(c: _Call) -> _State | list[_State | None] | None:
    nd = len(c.out_shape())
    return _join(c, c.a["tensors"], _norm_dim(c.a.get("dim", 0), nd), nd, new_dim=True)


def _pads(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    pad = [int(p) for p in (c.a.get("pad") if c.a.get("pad") is not None else c.a.get("padding"))]
    ishape, oshape = c.shape(x), c.out_shape()
    nd = len(ishape)
    axes, dims = list(sx.axes), list(sx.dims)
    skipped, inexact = sx.skipped, sx.inexact
    for i in range(len(pad) // 2):
        d = nd - 1 - i
        left, right = pad[2 * i], pad[2 * i + 1]
        if d < 0 or (left == 0 and right == 0):
            continue
        sp = _axes_in(sx.dims[d])
        k = _exact(sx, d)
        if k is not None:
            a = axes[k]
            axes[k] = _Axis(a.r, a.j, a.start - left * a.j)  # the first position is now a pad
            dims[d] = ((frozenset({k}), oshape[d]),)
        elif sp:
            skipped, inexact = skipped | c.skip(), inexact | sp
            dims[d] = ((sp, oshape[d]),)
        else:
            dims[d] = _plain(oshape[d])
    return replace(sx, axes=tuple(axes), dims=tuple(dims), skipped=skipped, inexact=inexact)


_on("constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
    "replication_pad2d", "replication_pad3d", "_pad_circular", "circular_pad1d", "circular_pad2d",
    "circular_pad3d")(_pads)


@_on("roll", "flip", "fliplr", "flipud")
def _roll_flip(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None:
        return _fallback(c)
    nd = len(c.shape(x))
    ds = c.a.get("dims")
    if c.op.endswith("fliplr"):
        ds = [1]
    elif c.op.endswith("flipud"):
        ds = [0]
    ds = [] if ds is None else ([ds] if isinstance(ds, int) else list(ds))
    if not ds or any(_axes_in(sx.dims[_norm_dim(d, nd)]) for d in ds):
        return _fallback(c)  # moves positions around: no window rule
    return sx


@_on("index_select")
def _index_select(c: _Call) -> _State | list[_State | None] | None:
    x = c.x()
    sx = c.st(x)
    if sx is None or isinstance(c.st(c.a.get("index")), _State):
        return _fallback(c)
    ishape = c.shape(x)
    d = _norm_dim(c.a["dim"], len(ishape))
    if _axes_in(sx.dims[d]):
        return _fallback(c)
    dims = list(sx.dims)
    dims[d] = _plain(c.out_shape()[d])
    return replace(sx, dims=tuple(dims))


@_on("embedding")
def _embedding(c: _Call) -> _State | list[_State | None] | None:
    idx = c.a.get("indices")
    si = c.st(idx)
    if si is None:
        return _fallback(c)
    return c.with_others(replace(si, dims=si.dims + (_plain(c.out_shape()[-1]),)), idx)


# -- rules: matrix products and attention -------------------------------------------------------

def _product(c: _Call, a: Any, b: Any, oshape: tuple[int, ...], *, b_t: bool = False,
             sum_batch: bool = False) -> _State | None:
    """(..., n, k) @ (..., k, m); `b_t`: b is given as (..., m, k)."""
    sa, sb = c.st(a), c.st(b)
    states = [s for s in (sa, sb) if s is not None]
    if not states:
        return None
    base = _combine(states, c.op)
    glob, skipped = base.glob, base.skipped
    ash = c.shape(a) if isinstance(a, Tensor) else ()
    bsh = c.shape(b) if isinstance(b, Tensor) else ()
    na, nb = len(ash), len(bsh)
    ca = [na - 1] + (list(range(na - 2)) if sum_batch else [])
    cb = [nb - 1 if b_t else nb - 2] + (list(range(nb - 2)) if sum_batch else [])
    for s, ds in ((sa, ca), (sb, cb)):
        if s is not None:
            g, u = _contract(s, ds)
            glob = glob or (c.op if g else None)
            if u:
                skipped = skipped | c.skip()
    nd = len(oshape)
    rows = sa.dims[na - 2] if (sa is not None and na >= 2) else _plain(oshape[nd - 2]) if nd >= 2 else ()
    cols = (sb.dims[nb - 2 if b_t else nb - 1] if (sb is not None and nb >= 2) else
            _plain(oshape[nd - 1]) if nd >= 1 else ())
    dims: list[tuple[Atom, ...]] = []
    bad: set = set()
    nbatch = nd - 2
    for e in range(max(nbatch, 0)):
        cands = []
        for s, sh in ((sa, ash), (sb, bsh)):
            off = len(sh) - 2 - nbatch
            if s is not None and 0 <= e + off < len(sh) - 2 and sh[e + off] == oshape[e]:
                cands.append(s.dims[e + off])
        atoms, bb = _union_atoms(cands, oshape[e])
        dims.append(atoms)
        bad |= bb
    if nd >= 2:
        dims += [rows, cols]
    elif nd == 1:  # matrix-vector
        dims = [rows if na >= 2 else cols]
    return replace(base, dims=tuple(dims), glob=glob, skipped=skipped, inexact=base.inexact | frozenset(bad))


def _with_bias(c: _Call, st: _State | None, bias: Any) -> _State | list[_State | None] | None:
    sbias = c.st(bias)
    if sbias is None:
        return st if st is not None else _fallback(c)
    parts = [(c.shape(bias), sbias)] + ([(c.out_shape(), st)] if st is not None else [])
    return _broadcast(parts, c.out_shape(), c.op)


@_on("mm", "bmm", "_int_mm", "_scaled_mm", "matmul")
def _mm(c: _Call) -> _State | list[_State | None] | None:
    a, b = c.a.get("self"), c.a.get("mat2", c.a.get("other"))
    if isinstance(a, Tensor) and isinstance(b, Tensor) and (a.ndim < 2 or b.ndim < 2):
        return _fallback(c)
    return _with_bias(c, _product(c, a, b, c.out_shape()), c.a.get("bias"))


@_on("addmm", "_addmm_activation", "baddbmm", "addbmm")
def _addmm(c: _Call) -> _State | list[_State | None] | None:
    a = c.a.get("mat1", c.a.get("batch1"))
    b = c.a.get("mat2", c.a.get("batch2"))
    st = _product(c, a, b, c.out_shape(), sum_batch=c.op.endswith("addbmm") and not c.op.endswith("baddbmm"))
    return _with_bias(c, st, c.a.get("self"))


@_on("linear")
def _linear(c: _Call) -> _State | list[_State | None] | None:
    return _with_bias(c, _product(c, c.a.get("input"), c.a.get("weight"), c.out_shape(), b_t=True), c.a.get("bias"))


@_on("mv", "addmv")
def _mv(c: _Call) -> _State | list[_State | None] | None:
    a = c.a.get("mat", c.a.get("self")) if c.op.endswith("addmv") else c.a.get("self")
    v = c.a.get("vec")
    sa, sv = c.st(a), c.st(v)
    states = [s for s in (sa, sv) if s is not None]
    if not states:
        return _with_bias(c, None, c.a.get("self") if c.op.endswith("addmv") else None)
    base = _combine(states, c.op)
    glob, skipped = base.glob, base.skipped
    for s, ds in ((sa, [1]), (sv, [0])):
        if s is not None:
            g, u = _contract(s, ds)
            glob = glob or (c.op if g else None)
            skipped = skipped | (c.skip() if u else _NOAX)
    dims = (sa.dims[0],) if sa is not None else (_plain(c.out_shape()[0]),)
    st = replace(base, dims=dims, glob=glob, skipped=skipped)
    return _with_bias(c, st, c.a.get("self") if c.op.endswith("addmv") else None)


@_on("dot", "vdot", "inner")
def _dot(c: _Call) -> _State | list[_State | None] | None:
    states = [st for _, st, _ in c.ins]
    base = _combine(states, c.op)
    glob = base.glob
    for t, st, sh in c.ins:
        g, _ = _contract(st, range(len(sh)))
        glob = glob or (c.op if g else None)
    return _reduce_like_all(c, base, glob)


def _reduce_like_all(c: _Call, base: _State, glob: str | None) -> list[_State | None]:
    return [replace(base, dims=tuple(_plain(n) for n in _shape(o)), glob=glob) for o in c.outs]


@_on("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
     "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math",
     "_scaled_dot_product_attention_math_for_mps", "scaled_dot_product_attention", "_flash_attention_forward",
     "_efficient_attention_forward", "_native_multi_head_attention", "_transformer_encoder_layer_fwd")
def _attention(c: _Call) -> _State | list[_State | None] | None:
    q = c.a.get("query", c.a.get("src", c.a.get("q")))
    k = c.a.get("key", c.a.get("k", q))
    v = c.a.get("value", c.a.get("v", k))
    if not all(isinstance(t, Tensor) for t in (q, k, v)) or not c.outs or q.ndim < 2:
        return _fallback(c)
    states = [st for _, st, _ in c.ins]
    base = _combine(states, c.op)
    glob, skipped = base.glob, base.skipped
    for t, ds in ((q, [-1]), (k, [-1, -2]), (v, [-2])):
        s = c.st(t)
        if s is not None:
            g, u = _contract(s, [_norm_dim(d, len(c.shape(t))) for d in ds])
            glob = glob or (c.op if g else None)
            if u:
                skipped = skipped | c.skip()
    sq = c.st(q)
    qsh = c.shape(q)
    out: list[_State | None] = []
    for i, o in enumerate(c.outs):
        sh = _shape(o)
        if i == 0 and sq is not None and len(sh) == len(qsh) and sh[:-1] == qsh[:-1]:
            dims = sq.dims[:-1] + (_plain(sh[-1]),)
        else:
            dims = tuple(_plain(n) for n in sh)
        out.append(replace(base, dims=dims, glob=glob, skipped=skipped))
    return out


# -- the tracker -------------------------------------------------------------------------------

class _Tracker:
    def __init__(self, n_spatial: int) -> None:
        self.n = n_spatial
        self.states: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.skipped: Counter[str] = Counter()
        self.modules: dict[str, list[_State]] = {}
        self.seen_modules: set[str] = set()

    def seed(self, t: Tensor) -> None:
        shape = _shape(t)
        nd, n = len(shape), self.n
        dims = tuple(_plain(s) for s in shape[: nd - n]) + tuple(
            ((frozenset({k}), shape[nd - n + k]),) for k in range(n))
        self.states[t] = _State(axes=(_SEED_AXIS,) * n, dims=dims)

    def before(self, args: tuple, kwargs: dict) -> list[tuple[Tensor, _State, tuple[int, ...]]]:
        ins = []
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, Tensor):
                st = self.states.get(t)
                if st is not None:
                    ins.append((t, st, _shape(t)))
        return ins

    def after(self, func: Any, args: tuple, kwargs: dict, ins: list, out: Any) -> None:
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if not outs:
            return
        if not ins:
            for t in outs:  # an in-place write of constants replaces what the tensor held
                if t in self.states:
                    self.states.pop(t, None)
            return
        c = _Call(self, func, args, kwargs, ins, outs)
        handler = _HANDLERS.get(func.overloadpacket)
        if handler is None:
            handler = _pointwise if torch.Tag.pointwise in func.tags else _fallback
        try:
            res = handler(c)
        except Exception as e:  # a rule bug must not break the user's forward pass
            self.skipped[f"{c.op} (rule failed: {type(e).__name__})"] += 1
            c._skipped = True
            try:
                res = _fallback(c)
            except Exception:
                res = None
        self._assign(c, res)
        if func._schema.is_mutable:
            for t in c.outs:
                st = self.states.get(t)
                if st is not None and t._base is not None and any(t is a for a in args):
                    self._lift(c, t, st)

    def _lift(self, c: _Call, view: Tensor, st: _State) -> None:
        """An in-place write into a view (`out[:, :, :h] = x`) also writes into its base.

        The view's dims are matched to the base's by stride (slicing and select keep strides);
        the view's offset in the base moves the first position. Anything else keeps the field
        and drops the layout, counted as skipped.
        """
        base = view._base
        bshape, vshape = _shape(base), _shape(view)
        bstride, vstride = base.stride(), view.stride()
        mapping: dict[int, int] = {}
        ok = True
        for d in range(len(vshape)):
            if vshape[d] == 1:
                continue
            cands = [e for e in range(len(bshape))
                     if e not in mapping.values() and bstride[e] == vstride[d] and bshape[e] >= vshape[d]]
            if not cands:
                ok = False
                break
            mapping[d] = cands[0]
        offs = [0] * len(bshape)
        rem = view.storage_offset() - base.storage_offset()
        for e in sorted(range(len(bshape)), key=lambda e: -bstride[e]):
            if bstride[e] > 0 and bshape[e] > 1:
                offs[e], rem = divmod(rem, bstride[e])
        ok = ok and rem == 0
        axes = list(st.axes)
        dims = [_plain(n) for n in bshape]
        inexact = st.inexact
        for d, e in mapping.items():
            k = _exact(st, d)
            if k is not None:
                a = axes[k]
                axes[k] = _Axis(a.r, a.j, a.start - offs[e] * a.j)
                dims[e] = ((frozenset({k}), bshape[e]),)
            elif _axes_in(st.dims[d]):
                inexact = inexact | _axes_in(st.dims[d])
                dims[e] = ((_axes_in(st.dims[d]), bshape[e]),)
        if ok:
            new = replace(st, axes=tuple(axes), dims=tuple(dims), inexact=inexact)
        else:
            new = replace(st, dims=tuple(_plain(n) for n in bshape), skipped=st.skipped | c.skip())
        old = self.states.get(base)
        if old is not None:
            new = _broadcast([(bshape, old), (bshape, new)], bshape, c.op)
        self.states[base] = new

    def _assign(self, c: _Call, res: Any) -> None:
        if isinstance(res, list):
            states = res + [None] * (len(c.outs) - len(res))
        else:
            shape0 = c.outs[0].shape
            states = [res if (i == 0 or t.shape == shape0) else None for i, t in enumerate(c.outs)]
        for t, st in zip(c.outs, states):
            if st is None:
                self.states.pop(t, None)
                continue
            if len(st.dims) != t.ndim:  # a rule got the layout wrong: keep the field, drop the layout
                st = replace(st, dims=tuple(_plain(n) for n in _shape(t)))
            self.states[t] = st

    def on_module(self, path: str, out: Any) -> None:
        leaves = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if not leaves:
            return
        self.seen_modules.add(path)
        states = [st for t in leaves if (st := self.states.get(t)) is not None]
        if states:
            self.modules.setdefault(path, []).extend(states)


class _RFMode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a dispatch mode's __torch_dispatch__ in _disable_dynamo, whose first call imports
        # torch._dynamo (3-5 s of start-up); dldoctor never runs its passes under torch.compile
        return False

    def __init__(self, tracker: _Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        ins = self.tracker.before(args, kwargs)
        out = func(*args, **kwargs)
        self.tracker.after(func, args, kwargs, ins, out)
        return out


# -- reporting ---------------------------------------------------------------------------------

def _num(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def _fmt(values: Sequence[Fraction]) -> str:
    nums = [_num(v) for v in values]
    return "×".join(str(v) if isinstance(v, int) else f"{v:.10g}" for v in nums)


def _fmt_stride(values: Sequence[Fraction]) -> str:
    return _fmt(values[:1]) if len(set(values)) == 1 else _fmt(values)


def _notes(st: _State) -> list[str]:
    notes = []
    if st.skipped:
        notes.append(f"no receptive-field rule for {', '.join(sorted(st.skipped))}: a lower bound")
    if st.approx:
        notes.append(f"approximate: {', '.join(sorted(st.approx))}")
    return notes


def _report(st: _State, overall: bool) -> ReceptiveField:
    status = PARTIAL if st.skipped else COMPLETE
    size = [_num(a.r) for a in st.axes]
    stride = [_num(a.j) for a in st.axes]
    padding = [_num(a.r / 2 - a.start) for a in st.axes]
    local = f"{_fmt([a.r for a in st.axes])} px at stride {_fmt_stride([a.j for a in st.axes])}"
    if st.glob:
        if overall:
            reason = (f"the output follows a global operation ({st.glob}): it sees the whole input; "
                      f"the last spatial feature map sees {local}")
            rf = ReceptiveField(status, size, stride, padding, True, None)
        else:
            reason = f"sees the whole input (after {st.glob}); its local path alone sees {local}"
            rf = ReceptiveField(status, None, None, None, True, None)
    else:
        reason = None
        rf = ReceptiveField(status, size, stride, padding, False, None)
    notes = _notes(st)
    rf.reason = "; ".join([r for r in [reason, *notes] if r]) or None
    return rf


# -- public entry point ------------------------------------------------------------------------

def receptive_field(module: torch.nn.Module, inputs: tuple[Tensor, ...] | Tensor,
                    spatial_dims: int | None = None) -> RFResult:
    """Receptive field of `module`'s output and of every submodule's output, in input pixels.

    Runs one forward pass of `module(*inputs)` under `torch.no_grad` (meta or real tensors;
    `training` is left as it is). `spatial_dims` is how many trailing dims of the input are
    spatial; by default 1, 2 or 3 for a 3-, 4- or 5-D first input (NCL, NCHW, NCDHW), else 0,
    and then the input tensors of that rank are the ones traced. An error raised by the
    forward pass propagates, with every hook removed.
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    leaves = [t for t in tree_leaves(inputs) if isinstance(t, Tensor)]
    if spatial_dims is None:
        n = {3: 1, 4: 2, 5: 3}.get(leaves[0].ndim, 0) if leaves else 0
        seeds = [t for t in leaves if n and t.ndim == leaves[0].ndim]
    else:
        n = int(spatial_dims)
        seeds = [t for t in leaves if n and t.ndim >= n]
    if n <= 0 or not seeds:
        why = ("the input has no spatial dimensions (pass spatial_dims for an N-D input)"
               if leaves else "the model takes no tensor input")
        return RFResult(ReceptiveField(UNAVAILABLE, reason=why))

    tracker = _Tracker(n)
    for t in seeds:
        tracker.seed(t)
    handles = []
    try:
        for path, sub in module.named_modules():
            try:
                handles.append(sub.register_forward_hook(_make_hook(tracker, path)))
            except RuntimeError:  # a ScriptModule takes no hooks: it still gets the overall field
                pass
        with torch.no_grad(), _RFMode(tracker):
            from dldoctor.collect.inputs import call_model  # model(*positional, **named)

            out = call_model(module, inputs)
    finally:
        for h in handles:
            h.remove()

    per_module: dict[str, ReceptiveField] = {}
    for path, _ in module.named_modules():
        if path in tracker.modules:
            per_module[path] = _report(_combine(tracker.modules[path], "outputs"), overall=False)
        elif path in tracker.seen_modules:
            per_module[path] = ReceptiveField(UNAVAILABLE, reason="the output does not depend on the input")

    outs = [st for t in tree_leaves(out) if isinstance(t, Tensor) and (st := tracker.states.get(t)) is not None]
    if outs:
        overall = _report(_combine(outs, "outputs"), overall=True)
    else:
        overall = ReceptiveField(UNAVAILABLE, reason="the output does not depend on the input")
    return RFResult(overall, per_module, dict(tracker.skipped))


def _make_hook(tracker: _Tracker, path: str) -> Callable:
    def hook(mod: torch.nn.Module, args: Any, out: Any) -> None:
        tracker.on_module(path, out)

    return hook
