"""The forward pass as a dataflow graph of leaf-module calls and functional ops.

Rules match patterns on it (a conv feeding a batch norm, two linears with nothing
between, a softmax at the output), so it records what actually ran and what fed
what, not the order modules were registered in. One pass on the meta device
(nothing allocated) under a dispatch mode: a leaf module call is one node (the ops
inside it are not recorded); any op outside a leaf module (F.relu, `x + skip`,
torch.cat, x.view) is a node of its own. Edges come from tensor identity: every
tensor produced is mapped to the node that produced it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from dldoctor.collect.trace import stand_ins, to_device
from dldoctor.report.facts import Graph, Node

_PLAIN = (int, float, bool, str, type(None))


def _plain(v: Any) -> bool:
    if isinstance(v, _PLAIN):
        return True
    return isinstance(v, (tuple, list)) and len(v) <= 16 and all(isinstance(x, _PLAIN) for x in v)


def plain_attrs(m: torch.nn.Module) -> dict[str, Any]:
    """Public plain-valued attributes of a module (kernel_size, stride, p, eps, norm_first, ...)."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(m).items()
           if not k.startswith("_") and k != "training" and _plain(v)}
    if hasattr(m, "bias"):
        out["has_bias"] = isinstance(getattr(m, "bias", None), torch.Tensor)
    out["params"] = sum(p.numel() for p in m.parameters(recurse=False))
    return out


def _is_leaf(m: torch.nn.Module) -> bool:
    return not any(True for _ in m.children()) or isinstance(m, (torch.nn.MultiheadAttention, torch.nn.RNNBase))


def _first_shape(out: Any) -> list[int] | None:
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor) and not t.is_nested:
            return list(t.shape)
    return None


def _scalar_args(args: Any) -> list[Any]:
    vals = []
    for a in tree_flatten(args)[0]:
        if isinstance(a, torch.Tensor):
            continue
        if _plain(a):
            vals.append(a)
        elif isinstance(a, torch.dtype):
            vals.append(str(a).replace("torch.", ""))
    return vals[:16]


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a dispatch mode's __torch_dispatch__ in _disable_dynamo, whose first call imports
        # torch._dynamo (3-5 s of start-up); dldoctor never runs its passes under torch.compile
        return False

    def __init__(self, graph: Graph, producer: WeakTensorKeyDictionary, state: dict) -> None:
        super().__init__()
        self.g, self.producer, self.state = graph, producer, state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.state["in_leaf"] == 0:
            ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            node = Node(
                id=len(self.g.nodes), kind="op", target=f"aten.{func.overloadpacket.__name__}",
                type=func.overloadpacket.__name__, inputs=_producers(self.producer, ins),
                output_shape=_first_shape(out),
                attrs={"args": _scalar_args((args, kwargs)), "num_tensor_inputs": len(ins)},
                parent=self.state["stack"][-1] if self.state["stack"] else "",
            )
            self.g.nodes.append(node)
            _assign(self.producer, out, node.id)
        return out


def _producers(producer: WeakTensorKeyDictionary, tensors: list[torch.Tensor]) -> list[int]:
    ids: list[int] = []
    for t in tensors:
        i = producer.get(t)
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def _assign(producer: WeakTensorKeyDictionary, out: Any, node_id: int) -> None:
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor):
            producer[t] = node_id


def collect_graph(module: torch.nn.Module, inputs: tuple, device: str = "meta") -> Graph:
    """Trace `module` on `inputs` (run on meta stand-ins by default) into a Graph.

    Raises whatever the forward pass raises; hooks are removed and training flags
    restored either way.
    """
    g = Graph()
    producer = WeakTensorKeyDictionary()
    state: dict[str, Any] = {"in_leaf": 0, "stack": []}
    leaves = {path for path, m in module.named_modules() if _is_leaf(m)}
    flags = [(m, m.training) for m in module.modules()]
    handles = []

    def pre(path: str, m: torch.nn.Module):  # noqa: ANN202
        leaf = path in leaves and path != "" or (path == "" and _is_leaf(m))

        def hook(mod, args, kwargs):  # noqa: ANN001, ANN202
            if leaf:
                if state["in_leaf"] == 0:
                    ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
                    node = Node(id=len(g.nodes), kind="module", target=path, type=type(mod).__name__,
                                inputs=_producers(producer, ins), attrs=plain_attrs(mod),
                                parent=state["stack"][-1] if state["stack"] else "")
                    g.nodes.append(node)
                    state.setdefault("open", []).append(node)
                state["in_leaf"] += 1
            else:
                state["stack"].append(path)

        return hook

    def post(path: str, m: torch.nn.Module):  # noqa: ANN202
        leaf = path in leaves and path != "" or (path == "" and _is_leaf(m))

        def hook(mod, args, kwargs, out):  # noqa: ANN001, ANN202
            if leaf:
                state["in_leaf"] -= 1
                if state["in_leaf"] == 0:
                    node = state["open"].pop()
                    node.output_shape = _first_shape(out)
                    _assign(producer, out, node.id)
            elif state["stack"] and state["stack"][-1] == path:
                state["stack"].pop()

        return hook

    try:
        for path, m in module.named_modules():
            handles.append(m.register_forward_pre_hook(pre(path, m), with_kwargs=True))
            handles.append(m.register_forward_hook(post(path, m), with_kwargs=True))
            if not _is_leaf(m):
                g.containers[path] = {"type": type(m).__name__, "attrs": plain_attrs(m)}
        module.eval()
        args = to_device(inputs, device)
        for i, t in enumerate(a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)):
            node = Node(id=len(g.nodes), kind="input", target=f"input{i}", type="input", output_shape=list(t.shape))
            g.nodes.append(node)
            producer[t] = node.id
        with stand_ins(module, device), torch.no_grad(), _Recorder(g, producer, state):
            from dldoctor.collect.inputs import call_model  # model(*positional, **named)

            out = call_model(module, args)
        g.outputs = _producers(producer, [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)])
        if isinstance(out, Mapping):  # a dict or a transformers ModelOutput: which output is which
            for k, v in out.items():
                i = producer.get(v) if isinstance(v, torch.Tensor) else None
                if i is not None:
                    g.output_names.setdefault(i, str(k))
    finally:
        for h in handles:
            h.remove()
        for m, t in flags:
            m.training = t
    return g
