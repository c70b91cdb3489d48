"""The op and module vocabulary of the traced graph, and the walks over it that rule families share.

A node's `type` is a module class ("Conv2d") or an ATen op name ("relu", or "relu_" in place;
see collect/graph.py). Every group of names is defined once, here. A family that matches a wider
or narrower set composes it from these pieces and says why (see `PASS` and `VALUE_PASS`).
Catalog modules import from dldoctor.rules.helpers, never from each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dldoctor.report.facts import Graph, Node, walk


def base(t: str) -> str:
    """Op name without the in-place underscore: relu_ -> relu, add_ -> add (dunder names kept)."""
    return t[:-1] if t.endswith("_") and not t.endswith("__") and len(t) > 1 else t


# -- layers with weights ---------------------------------------------------------------------------

PLAIN_CONVS = frozenset({"Conv1d", "Conv2d", "Conv3d"})
CONVS = PLAIN_CONVS | {"LazyConv1d", "LazyConv2d", "LazyConv3d"}
PLAIN_TCONVS = frozenset({"ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"})
TCONVS = PLAIN_TCONVS | {"LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d"}
LINEARS = frozenset({"Linear", "LazyLinear", "NonDynamicallyQuantizableLinear"})
AFFINE = CONVS | TCONVS | LINEARS  # layers that are one linear map of their input
RNNS = frozenset({"RNN", "LSTM", "GRU"})
RNN_CELLS = frozenset({"RNNCell", "LSTMCell", "GRUCell"})
WEIGHTED = AFFINE | RNNS | {"Bilinear", "MultiheadAttention"}
EMBEDDINGS = frozenset({"Embedding", "EmbeddingBag"})

# -- normalisation ---------------------------------------------------------------------------------

BATCHNORMS = frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"})
NORM_MODULES = BATCHNORMS | {"LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm1d", "InstanceNorm2d",
                             "InstanceNorm3d", "LocalResponseNorm"}
NORM_OPS = frozenset({"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                      "native_layer_norm", "native_group_norm", "layer_norm", "batch_norm", "group_norm",
                      "_fused_rms_norm"})
NORMS = NORM_MODULES | NORM_OPS  # torch's own norms by exact name; `is_norm` also knows custom *Norm classes

# -- activations -----------------------------------------------------------------------------------

ACT_MODULES = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
    "Hardswish", "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softplus", "Softsign", "LogSigmoid",
    "Tanhshrink", "Threshold", "GLU", "Hardshrink", "Softshrink",
})
ACT_OPS = frozenset({
    "relu", "relu6", "leaky_relu", "prelu", "_prelu_kernel", "rrelu", "elu", "celu", "selu", "gelu", "silu",
    "mish", "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "softshrink", "hardshrink",
    "log_sigmoid_forward", "threshold", "glu",
})
# Rectifier-like activations: applying one after another adds nothing (unlike tanh(softplus(x)) in Mish).
RECTIFIERS = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Hardswish",
    "relu", "relu6", "leaky_relu", "prelu", "_prelu_kernel", "rrelu", "elu", "celu", "selu", "gelu", "silu",
    "mish", "hardswish",
})
# Exact spellings (module, op, in-place op) of the activations a head may end with.
RELU = frozenset({"ReLU", "relu", "relu_"})
SIGMOID = frozenset({"Sigmoid", "sigmoid", "sigmoid_"})
HARDSIGMOID = frozenset({"Hardsigmoid", "hardsigmoid", "hardsigmoid_"})
TANH = frozenset({"Tanh", "tanh", "tanh_"})
HARD_BOUNDED = HARDSIGMOID | {"Hardtanh", "hardtanh", "hardtanh_", "ReLU6"}
SOFTMAX_OPS = frozenset({"softmax", "_softmax"})
SOFTMAX = SOFTMAX_OPS | {"Softmax", "Softmax2d"}
LOG_SOFTMAX = frozenset({"LogSoftmax", "log_softmax", "_log_softmax"})
HEAD_ACTIVATIONS = SOFTMAX | LOG_SOFTMAX | SIGMOID | TANH | HARD_BOUNDED | RELU
# Module classes as a training probe records them (dldoctor/report/probe_types.py LayerProbe.type).
RELU_MODULES = frozenset({"ReLU", "ReLU6", "LeakyReLU", "RReLU"})
SATURATING_MODULES = frozenset({"Sigmoid", "Tanh", "Hardsigmoid", "Hardtanh", "Softsign"})

# -- other layers and ops --------------------------------------------------------------------------

MERGES = frozenset({"add", "cat", "concat", "stack", "sub"})  # ops that join two feature tensors
UPSAMPLERS = TCONVS | {"Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "PixelShuffle"}
PADDERS = frozenset({
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d",
    "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d",
    "constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "_pad_circular",
})

# -- steps that pass a tensor on with its values unchanged -----------------------------------------

DROPOUTS = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"})
DROPOUT_OPS = frozenset({"dropout", "native_dropout", "feature_dropout", "alpha_dropout"})
DROP_PATH = frozenset({"StochasticDepth"})  # torchvision's drop-path: identity at inference
SHAPE_MODULES = frozenset({"Identity", "Flatten", "Unflatten"})
# Views, copies and casts.
VIEW_OPS = frozenset({
    "view", "_unsafe_view", "reshape", "flatten", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_",
    "permute", "transpose", "transpose_", "t", "contiguous", "clone", "expand", "alias", "detach",
    "_to_copy", "to", "lift_fresh",
})
# Rarer spellings of the same.
MORE_VIEW_OPS = frozenset({"unflatten", "movedim", "swapaxes", "view_as", "reshape_as", "expand_as", "as_strided",
                           "_reshape_alias", "lift_fresh_copy"})
SELECT_OPS = frozenset({"select", "slice"})  # indexing: keeps part of a tensor, each value unchanged

# What the structural walks (arch, transformer) look through, matched after `base()` (so in-place
# spellings count too). Indexing is left out: picking part of a feature tensor (a class token,
# one time step) ends a chain of layers rather than passing it on.
PASS = DROPOUTS | DROPOUT_OPS | DROP_PATH | SHAPE_MODULES | VIEW_OPS | MORE_VIEW_OPS

# What the walks from a layer to its values' consumers or back to their source (output, init,
# transfer: `source`, `head_module`) look through, matched by exact name. Indexing is in: logits[:, -1]
# still carries the head's activation. These walks have never looked through drop-path, the rarer
# view spellings or alpha_dropout, and they still do not, so no output, init or transfer finding
# moves; widening them would be a change of those rules, to make with their cases.
VALUE_PASS_MODULES = DROPOUTS | SHAPE_MODULES
VALUE_PASS = VALUE_PASS_MODULES | (DROPOUT_OPS - {"alpha_dropout"}) | VIEW_OPS | SELECT_OPS


# -- node classes ----------------------------------------------------------------------------------


def is_act(n: Node) -> bool:
    return (n.kind == "module" and n.type in ACT_MODULES) or (n.kind == "op" and base(n.type) in ACT_OPS)


def act_name(n: Node) -> str:
    return n.type if n.kind == "module" else base(n.type)


def is_norm(n: Node) -> bool:
    """A feature normalisation layer (batch, layer, group, instance, RMS, local response), module or op."""
    t = n.type.lower()
    if n.kind == "module":
        return "norm" in t
    if n.kind == "op":
        return "norm" in t and not any(w in t for w in ("vector_norm", "linalg", "frobenius", "renorm", "norm_except"))
    return False


def is_batchnorm(n: Node) -> bool:
    return n.kind == "module" and ("BatchNorm" in n.type or n.type.startswith("InstanceNorm"))


def is_pass(n: Node) -> bool:
    return n.type in PASS or (n.kind == "op" and base(n.type) in PASS)


def is_affine(n: Node) -> bool:
    return n.kind == "module" and n.type in AFFINE


def is_conv(n: Node) -> bool:
    return n.kind == "module" and n.type in CONVS


def is_weighted(n: Node) -> bool:
    return n.kind == "module" and n.type in WEIGHTED


def is_merge(n: Node) -> bool:
    """An op that joins two different feature tensors (a residual add, a concatenation)."""
    return n.kind == "op" and base(n.type) in MERGES and len(set(n.inputs)) >= 2


def is_upsample(n: Node) -> bool:
    if n.kind == "module":
        return n.type in UPSAMPLERS
    t = base(n.type)
    return n.kind == "op" and (t.startswith("upsample") or t.startswith("_upsample") or t == "pixel_shuffle")


# -- attributes and shapes -------------------------------------------------------------------------


def tup(v: Any, n: int = 1) -> tuple[int, ...]:
    """An int-or-tuple attribute as a tuple."""
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    if isinstance(v, (int, float)):
        return (int(v),) * n
    return ()


def kernel(n: Node) -> tuple[int, ...]:
    return tup(n.attrs.get("kernel_size"))


def widths(n: Node) -> tuple[int | None, int | None]:
    """(input width, output width) of a Linear or conv: features or channels."""
    a = n.attrs
    if n.type in LINEARS:
        return a.get("in_features"), a.get("out_features")
    return a.get("in_channels"), a.get("out_channels")


def shape_of(g: Graph, i: int) -> list[int] | None:
    return g.nodes[i].output_shape if 0 <= i < len(g.nodes) else None


def in_shape(g: Graph, n: Node) -> list[int] | None:
    """Shape of a node's first tensor input."""
    return shape_of(g, n.inputs[0]) if n.inputs else None


# -- walks -----------------------------------------------------------------------------------------


def fwd(g: Graph, n: Node, through: Any = is_pass) -> list[Node]:
    """The consumers of n's output, looking through pass-through nodes."""
    return walk(g.succ(n), g.succ, through)


def back(g: Graph, n: Node, through: Any = is_pass) -> list[Node]:
    """The producers of n's inputs, looking through pass-through nodes."""
    return walk(g.pred(n), g.pred, through)


def output_ids(g: Graph) -> list[int]:
    return list(g.outputs) or ([g.nodes[-1].id] if g.nodes else [])


def source(graph: Graph, node: Node) -> Node:
    """The step that last changed the values of `node`'s tensor (walking back through views and dropout)."""
    seen = set()
    while node.type in VALUE_PASS and len(node.inputs) == 1 and node.inputs[0] >= 0 and node.id not in seen:
        seen.add(node.id)
        node = graph.node(node.inputs[0])
    return node


def output_sources(graph: Graph) -> list[tuple[Node, Node]]:
    """(output node, the step that produced its values) for each output judged as the model's head (every output,
    unless the model names them: then its logits; see Graph.head)."""
    out = []
    for i in graph.head()[0]:
        n = graph.node(i)
        out.append((n, source(graph, n)))
    return out


def head_module(graph: Graph, out: Node) -> Node | None:
    """The module whose output reaches the model output through activations and views only."""
    n = out
    seen = set()
    while n.id not in seen:
        seen.add(n.id)
        if n.kind == "module" and n.type not in VALUE_PASS_MODULES and n.type not in HEAD_ACTIVATIONS:
            return n
        if (n.type in VALUE_PASS or n.type in HEAD_ACTIVATIONS) and len(n.inputs) == 1 and n.inputs[0] >= 0:
            n = graph.node(n.inputs[0])
            continue
        return None
    return None


# -- attention -------------------------------------------------------------------------------------
# An attention site is an `nn.MultiheadAttention` call, a scaled-dot-product-attention op, or a
# softmax between two batched matrix products (hand-written attention, as in Swin).

_BMM = {"bmm", "baddbmm", "matmul"}
_SCORE_OPS = {"add", "mul", "div", "sub", "masked_fill", "where", "_to_copy", "to", "clamp", "_softmax"}
_HEADS = ("num_heads", "n_heads", "nhead", "heads", "num_attention_heads")


@dataclass
class Site:
    node: Node
    q_len: int | None
    k_len: int | None
    head_dim: int | None
    heads: int | None
    embed: int | None


def _back_ops(g: Graph, n: Node, steps: int = 24) -> list[Node]:
    """Ops feeding n through a few score-shaping ops (scale, bias, mask), nearest first."""
    out, todo, seen = [], list(g.pred(n)), set()
    while todo and len(seen) < steps:
        m = todo.pop(0)
        if m.id in seen or m.kind != "op":
            continue
        seen.add(m.id)
        out.append(m)
        if is_pass(m) or base(m.type) in _SCORE_OPS:
            todo.extend(g.pred(m))
    return out


def _container_heads(g: Graph, n: Node) -> int | None:
    path = n.parent
    while path is not None:
        attrs = (g.containers.get(path) or {}).get("attrs") or {}
        for k in _HEADS:
            if isinstance(attrs.get(k), int) and attrs[k] > 0:
                return attrs[k]
        if path == "":
            break
        path = path.rsplit(".", 1)[0] if "." in path else ""
    return None


def attention_sites(g: Graph) -> list[Site]:
    sites: list[Site] = []
    for n in g.nodes:
        if n.kind == "module" and n.type == "MultiheadAttention":
            a = n.attrs
            bf = bool(a.get("batch_first"))
            q = shape_of(g, n.inputs[0]) if n.inputs else None
            k = shape_of(g, n.inputs[1]) if len(n.inputs) > 1 else q

            def length(s: list[int] | None) -> int | None:
                if not s:
                    return None
                if len(s) == 2:
                    return s[0]
                return s[1] if bf else s[0]

            sites.append(Site(n, length(q), length(k), a.get("head_dim"), a.get("num_heads"), a.get("embed_dim")))
        elif n.kind == "op" and "scaled_dot_product" in n.type:
            q = shape_of(g, n.inputs[0]) if n.inputs else None
            k = shape_of(g, n.inputs[1]) if len(n.inputs) > 1 else None
            if not q or len(q) < 2:
                continue
            heads = q[-3] if len(q) >= 4 else _container_heads(g, n)
            sites.append(Site(n, q[-2], k[-2] if k else None, q[-1], heads,
                              q[-1] * heads if heads else None))
        elif n.kind == "op" and base(n.type) in ("_softmax", "softmax"):
            score = next((m for m in _back_ops(g, n) if base(m.type) in _BMM), None)
            if score is None:
                continue
            if not any(base(m.type) in _BMM for m in fwd(g, n, lambda m: is_pass(m) or m.kind == "op"
                                                         and base(m.type) in ("_to_copy", "to", "dropout"))):
                continue
            q = shape_of(g, score.inputs[0]) if score.inputs else None
            k = n.output_shape
            heads = _container_heads(g, n)
            if heads is None and q and len(q) >= 4:
                heads = q[-3]
            hd = q[-1] if q else None
            sites.append(Site(n, q[-2] if q and len(q) >= 2 else None, k[-1] if k else None, hd, heads,
                              hd * heads if hd and heads else None))
    return sites


def has_attention(g: Graph) -> bool:
    return bool(attention_sites(g))
