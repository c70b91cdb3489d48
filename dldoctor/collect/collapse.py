"""Where a feature map shrinks to nothing, and the smallest input that clears every window.

When a forward pass fails because a convolution or pooling receives a map smaller than its window
("Output size is too small", "Kernel size can't be greater than actual input size"), this runs the
pass again with hooks on the windowed layers (convolutions, max/avg/LP pooling) and stops at the
first one whose input, padded, is smaller than its dilated kernel. From there it walks back along the
chain of windowed layers that fed it (each one's output size matching the next one's input size),
inverting `out = floor((in + 2p - d(k-1) - 1) / s) + 1` from the size each layer needs, and scales the
result to the model input. The answer is then checked by one more hooked pass at that size (grown
until no window collapses). The result is one line of text in the report's diagnostics, which the
ARC019 rule reads back with `parse_note`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_WINDOWED = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3, "MaxPool1d": 1, "MaxPool2d": 2, "MaxPool3d": 3,
             "AvgPool1d": 1, "AvgPool2d": 2, "AvgPool3d": 3, "LPPool1d": 1, "LPPool2d": 2, "LPPool3d": 3}
_NOTE = re.compile(r"^the feature map shrinks to nothing at '(?P<layer>[^']*)' \((?P<type>\w+)\): "
                   r"(?P<size>[\dx]+) left for a (?P<window>[\dx]+) window on a (?P<input>[\dx]+) input"
                   r"(?:; the smallest input that clears every window is (?P<min>[\dx]+))?$")


@dataclass
class _Win:
    path: str
    type: str
    nd: int
    k: tuple[int, ...]
    s: tuple[int, ...]
    p: tuple[int, ...] | None  # None: padding="same"
    d: tuple[int, ...]
    size_in: tuple[int, ...]
    size_out: tuple[int, ...] | None = None

    def need_in(self, out: tuple[int, ...]) -> tuple[int, ...]:
        if self.p is None:
            return out
        return tuple(max(1, (o - 1) * s + d * (k - 1) + 1 - 2 * p)
                     for o, k, s, p, d in zip(out, self.k, self.s, self.p, self.d))

    def collapses(self) -> bool:
        if self.p is None:
            return False
        return any(i + 2 * p < d * (k - 1) + 1 for i, k, p, d in zip(self.size_in, self.k, self.p, self.d))


def _t(v: Any, n: int, default: int) -> tuple[int, ...]:
    if v is None:
        return (default,) * n
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else (int(v[0]),) * n
    return (int(v),) * n


def _win(path: str, m: Any, shape: tuple[int, ...]) -> _Win | None:
    nd = _WINDOWED.get(type(m).__name__)
    if nd is None or len(shape) < nd + 1:
        return None
    k = _t(getattr(m, "kernel_size", None), nd, 1)
    pad = getattr(m, "padding", 0)
    p = None if pad == "same" else (0,) * nd if pad == "valid" else _t(pad, nd, 0)
    return _Win(path, type(m).__name__, nd, k, _t(getattr(m, "stride", None) or k, nd, 1), p,
                _t(getattr(m, "dilation", 1), nd, 1), tuple(int(x) for x in shape[-nd:]))


class _Stop(Exception):
    pass


def _run(module: Any, args: Any, device: str) -> tuple[list[_Win], _Win | None]:
    """The windowed layers in call order, and the first that collapses (the pass stops there)."""
    import torch
    from torch.utils._pytree import tree_flatten

    from dldoctor.collect.inputs import call_model
    from dldoctor.collect.trace import eval_mode, stand_ins, to_device

    seen: list[_Win] = []
    open_: dict[int, _Win] = {}
    hit: list[_Win] = []
    handles = []

    def pre(path: str):  # noqa: ANN202
        def hook(m, inputs):  # noqa: ANN001, ANN202
            x = next((t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)), None)
            w = _win(path, m, tuple(x.shape)) if x is not None else None
            if w is None:
                return
            if w.collapses():
                hit.append(w)
                raise _Stop
            seen.append(w)
            open_[id(m)] = w
        return hook

    def post(m, inputs, out):  # noqa: ANN001, ANN202
        w = open_.pop(id(m), None)
        t = next((t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), None)
        if w is not None and t is not None:
            w.size_out = tuple(int(x) for x in t.shape[-w.nd:])

    for path, m in module.named_modules():
        if type(m).__name__ in _WINDOWED:
            handles.append(m.register_forward_pre_hook(pre(path)))
            handles.append(m.register_forward_hook(post))
    try:
        with eval_mode(module), stand_ins(module, device), torch.no_grad():
            call_model(module, to_device(args, device))
    except _Stop:
        pass
    except Exception:  # noqa: BLE001 - a failure elsewhere: no window collapsed before it
        pass
    finally:
        for h in handles:
            h.remove()
    return seen, (hit[0] if hit else None)


def _spatial_input(args: Any, nd: int) -> tuple[int, list[int]] | None:
    """(index among the tensor leaves, shape) of the first floating input with `nd` spatial axes."""
    import torch
    from torch.utils._pytree import tree_flatten

    leaves = [t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)]
    for i, t in enumerate(leaves):
        if t.is_floating_point() and t.dim() >= nd + 2:
            return i, list(t.shape)
    return None


def _resized(args: Any, index: int, size: tuple[int, ...]) -> Any:
    import torch
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten(args)
    k = -1
    out = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            k += 1
            if k == index:
                leaf = torch.zeros(*leaf.shape[:-len(size)], *size, dtype=leaf.dtype, device="meta")
        out.append(leaf)
    return tree_unflatten(out, spec)


def collapse_note(module: Any, args: Any, device: str = "meta") -> str | None:
    """One line saying where the feature map collapses and the smallest input that clears every window;
    None when the failure was not a collapsing window. Never raises."""
    try:
        return _note(module, args, device)
    except Exception:  # noqa: BLE001 - an explanation of a failure must not fail itself
        return None


def _need(seen: list[_Win], bad: _Win, given: tuple[int, ...]) -> tuple[int, ...]:
    """The input size that gives `bad` a 1-pixel output, walking back the chain of windows that fed it."""
    need = bad.need_in((1,) * bad.nd)
    cur, start_in = bad, bad.size_in
    for w in reversed(seen):
        if w.size_out == cur.size_in and w.nd == cur.nd:
            need = w.need_in(need)
            cur, start_in = w, w.size_in
    return tuple(max(1, math.ceil(n * g / s)) for n, g, s in zip(need, given, start_in))


def _note(module: Any, args: Any, device: str) -> str | None:
    seen, bad = _run(module, args, device)
    if bad is None:
        return None
    where = _spatial_input(args, bad.nd)
    if where is None:
        return None
    index, shape = where
    given = tuple(int(x) for x in shape[-bad.nd:])
    first = bad
    size = _need(seen, bad, given)
    found = None
    for _ in range(24):  # a later window may collapse at that size: take its need too, until none does
        seen2, bad2 = _run(module, _resized(args, index, size), "meta")
        if bad2 is None:
            found = size
            break
        more = tuple(max(a, b) for a, b in zip(size, _need(seen2, bad2, size)))
        size = more if more != size else tuple(x + max(1, x // 8) for x in size)
    bad = first
    window = tuple(d * (k - 1) + 1 - 2 * p for k, p, d in zip(bad.k, bad.p or (0,) * bad.nd, bad.d))
    line = (f"the feature map shrinks to nothing at '{bad.path}' ({bad.type}): {_x(bad.size_in)} left for a "
            f"{_x(tuple(max(1, w) for w in window))} window on a {_x(given)} input")
    if found is not None:
        line += f"; the smallest input that clears every window is {_x(found)}"
    return line


def _x(t: tuple[int, ...]) -> str:
    return "x".join(str(int(v)) for v in t)


def parse_note(message: str) -> dict[str, Any] | None:
    """The facts of a `collapse_note` line (layer, type, size, window, input, min_input), else None."""
    m = _NOTE.match(message or "")
    if m is None:
        return None

    def ints(s: str | None) -> list[int] | None:
        return [int(x) for x in s.split("x")] if s else None

    return {"layer": m["layer"], "type": m["type"], "size": ints(m["size"]), "window": m["window"],
            "input": ints(m["input"]), "min_input": ints(m["min"])}
