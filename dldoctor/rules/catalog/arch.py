"""Architecture rules (ARC): shapes of the layer graph that the seeds advise against.

Every rule reads the traced graph (`Facts.graph`, see collect/graph.py) and, for the
receptive field, the report. Node classes and graph walks come from dldoctor/rules/helpers/graph.py;
the graph measures here (depth, plain runs, what lies up- or downstream) are this family's own.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from dldoctor.report.facts import Facts, Graph, Node
from dldoctor.rules.helpers.graph import (
    AFFINE,
    CONVS,
    DROPOUTS,
    HARDSIGMOID,
    PADDERS,
    RECTIFIERS,
    SIGMOID,
    SOFTMAX_OPS,
    TANH,
    act_name,
    back,
    base,
    fwd,
    has_attention,
    in_shape,
    is_act,
    is_affine,
    is_batchnorm,
    is_conv,
    is_merge,
    is_norm,
    is_pass,
    is_upsample,
    is_weighted,
    kernel,
    output_ids,
    shape_of,
    tup,
    widths,
)
from dldoctor.rules.helpers.inputs import assumed_note
from dldoctor.rules.options import ArchOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import ARCHITECTURE, CHOLLET, HANDBOOK, TRAINING_TIPS, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   ARCHITECTURE, TRANSFORMERS: CNN basics, kernel sizes, receptive field, pooling, BN, separable convs, ResNets
#   HANDBOOK: activations, depth vs width, information bottleneck, advanced CNNs
#   CHOLLET: conv/pool design, dropout rates, dropout only on dense layers
#   TRAINING_TIPS: batch norm, dropout 20-50 %

# Hidden activations that saturate (ARC013; hard-sigmoid/hard-tanh, linear in their middle, are left out).
SATURATING = SIGMOID | TANH
# What makes a wide expansion after a narrow layer an SE-style gate rather than a bottleneck (ARC012);
# nn.Softmax2d has never counted as one and still does not.
GATES = SIGMOID | HARDSIGMOID | SOFTMAX_OPS | {"Softmax"}

# -- graph measures --------------------------------------------------------------------


def reads_input(g: Graph, n: Node) -> bool:
    """True for a stem layer: one whose input comes straight from a model input."""
    return any(p.kind == "input" for p in back(g, n, lambda m: is_pass(m) or m.kind == "op" and base(m.type) in PADDERS))


def depths(g: Graph) -> tuple[dict[int, int], dict[int, int]]:
    """Longest and shortest count of weighted layers on a path from a model input to each node.

    Nodes not reached from an input (constants, parameters turned into tensors) are left out,
    so a class token or a position table does not open a short path.
    """
    longest: dict[int, int] = {}
    shortest: dict[int, int] = {}
    for n in g.nodes:
        w = 1 if is_weighted(n) else 0
        if n.kind == "input":
            longest[n.id] = shortest[n.id] = 0
            continue
        reached = [i for i in n.inputs if i in longest]
        if not reached:
            continue
        longest[n.id] = max(longest[i] for i in reached) + w
        shortest[n.id] = min(shortest[i] for i in reached) + w
    return longest, shortest


def net_depth(g: Graph) -> int:
    longest, _ = depths(g)
    return max(longest.values(), default=0)


def spatial(shape: list[int] | None, nd: int) -> list[int]:
    """The last nd sizes of a shape (the spatial ones of a conv input)."""
    if not shape or nd <= 0 or len(shape) < nd + 1:
        return []
    return list(shape[-nd:])


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- ARC001 ---------------------------------------------------------------------------


@rule(code="ARC001", name="large-kernel", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(ARCHITECTURE, TRANSFORMERS))
def large_kernel(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds dense convolutions past the stem with a square kernel of 5 or more taps per side, and
    compares their weight count with a stack of 3-wide convolutions that sees the same window
    (two 3×3 for a 5×5, three for a 7×7), the intermediate width being the narrower of the
    conv's input and output.

    Depthwise and grouped convolutions (cheap by construction), dilated ones, patch embeddings
    (stride equal to the kernel) and the stem (the conv that reads the model input, where a
    large window on few channels is a deliberate and cheap choice) are left alone.

    ## Why is this bad?
    A k×k kernel costs k² weights per input-output channel pair. Stacked 3×3 layers cover the
    same field for fewer weights and fewer multiply-adds, and put a non-linearity between each
    step, so the block can express more for less. The gap grows with the kernel and is widest
    for 3-D convolutions (k³ against 27 per layer), as in volumetric medical imaging.

    ## Example
    ```python
    nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 7, padding=3),  # 200,704 weights
    )
    ```

    ## Use instead
    ```python
    nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        *[m for _ in range(3) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())],
    )  # same 7×7 field, 110,592 weights
    ```

    ## Options
    - `arch.large-kernel-min`: smallest kernel side counted as large (default 5)
    - `arch.large-kernel-min-saving`: smallest fraction of the weights the 3×3 stack must save for the rule to fire (default 0.25)
    - `arch.skip-stem`: leave the stem conv, the one reading the model input, alone (default true)
    """
    g = facts.graph
    for n in g.modules(*CONVS):
        k = kernel(n)
        a = n.attrs
        if not k or min(k) < opts.large_kernel_min or len(set(k)) != 1 or k[0] % 2 == 0:
            continue
        if a.get("groups", 1) != 1 or any(d != 1 for d in tup(a.get("dilation", 1), len(k))):
            continue
        if tup(a.get("stride", 1), len(k)) == k:
            continue  # a patch embedding: non-overlapping windows, not a receptive-field choice
        if opts.skip_stem and reads_input(g, n):
            continue
        cin, cout = widths(n)
        if not cin or not cout:
            continue
        d, kk = len(k), k[0]
        layers = (kk - 1) // 2
        m = min(cin, cout)
        single = kk**d * cin * cout
        stacked = 3**d * (cin * m + max(layers - 2, 0) * m * m + m * cout)
        saving = 1 - stacked / single
        if saving < opts.large_kernel_min_saving:
            continue
        ks = "×".join([str(kk)] * d)
        yield Hit(
            f"{ks} conv ({cin}→{cout} channels) has {single:,} weights; {layers} stacked "
            f"{'×'.join(['3'] * d)} convs see the same field with {stacked:,} ({saving:.0%} fewer)",
            location=n.target,
            evidence={"kernel": list(k), "in_channels": cin, "out_channels": cout, "weights": single,
                      "stacked_3x3_layers": layers, "stacked_weights": stacked, "saving": round(saving, 3)},
            fix=f"replace it with {layers} 3-wide convs (with normalisation and an activation between them)",
        )


# -- ARC002 ---------------------------------------------------------------------------


@rule(code="ARC002", name="bias-before-batchnorm", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, TRAINING_TIPS))
def bias_before_batchnorm(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds convolutions and Linear layers with a bias whose only consumer is a batch (or
    instance) normalisation layer. Reported once per model, listing every such layer.

    ## Why is this bad?
    Batch norm subtracts the per-channel mean and then adds its own learned shift, so a bias
    added just before it is cancelled in training and merely folded into the norm's shift at
    inference. The bias is dead weight: extra parameters, optimiser state and memory traffic
    that change nothing.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
    ```
    For deployment, fold each norm into the conv before it (`dldoctor compress -t fold-conv-bn`).

    ## Options
    None.
    """
    g = facts.graph
    pairs = []
    for n in g.modules(*AFFINE):
        if not n.attrs.get("has_bias"):
            continue
        users = g.succ(n)
        if users and all(is_batchnorm(u) for u in users):
            pairs.append((n, users[0]))
    if not pairs:
        return
    wasted = sum(widths(n)[1] or 0 for n, _ in pairs)
    n, u = pairs[0]
    kinds = sorted({y.type for _, y in pairs})  # the norms found, by name: BatchNorm2d, InstanceNorm2d, ...
    what = (f"{n.type} {n.target} feeds {u.type}" if len(pairs) == 1
            else f"{len(pairs)} layers ({', '.join(x.target for x, _ in pairs[:3])}{', ...' if len(pairs) > 3 else ''}) "
                 f"feed {' or '.join(kinds)} layers")
    yield Hit(
        f"{what} but keep{'s' if len(pairs) == 1 else ''} a bias the norm cancels ({wasted:,} wasted parameters)",
        location=n.target,
        evidence={"layers": [x.target for x, _ in pairs], "norms": [y.target for _, y in pairs],
                  "norm_types": kinds, "bias_params": wasted},
        fix="build these layers with bias=False",
        # an instance norm's statistics are the input's own, so only a batch norm folds into the conv before it
        transform="fold-conv-bn" if any(x.type in CONVS and "BatchNorm" in y.type for x, y in pairs) else None,
    )


# -- ARC003 ---------------------------------------------------------------------------


@rule(code="ARC003", name="batchnorm-after-activation", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(ARCHITECTURE, TRANSFORMERS))
def batchnorm_after_activation(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds batch normalisation placed after the activation (conv → ReLU → BatchNorm) rather than
    between the layer and its activation (conv → BatchNorm → ReLU). When the model uses both
    orders, the message says so: mixed placement is rarely intended.

    ## Why is this bad?
    The usual and best-studied placement normalises the pre-activation, so the non-linearity
    always sees zero-mean, unit-variance inputs and the norm's shift acts as the layer's
    bias. Normalising after a ReLU works on a half-rectified distribution and leaves the
    layer's bias in play. Some models train well either way; this is advice, not an error.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
    ```

    ## Options
    None.
    """
    g = facts.graph
    after: list[tuple[Node, Node, Node]] = []
    before = 0
    for n in g.nodes:
        if not is_affine(n):
            continue
        for u in fwd(g, n):
            if is_batchnorm(u) and u.type.startswith(("BatchNorm", "SyncBatchNorm")):
                before += 1
            elif is_act(u):
                for v in fwd(g, u):
                    if is_batchnorm(v) and "BatchNorm" in v.type:
                        after.append((n, u, v))
    for layer, act, norm in after:
        mixed = f"; elsewhere the model normalises before the activation ({before} places)" if before else ""
        yield Hit(
            f"{norm.type} comes after the activation: {layer.type} → {act_name(act)} → {norm.type}{mixed}",
            location=norm.target,
            evidence={"order": [layer.type, act_name(act), norm.type], "layer": layer.target,
                      "norm_before_activation_elsewhere": before},
            fix=f"move {norm.type} between {layer.target} and its activation (and drop that layer's bias)",
        )


# -- ARC004 ---------------------------------------------------------------------------


@rule(code="ARC004", name="dropout-too-high", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(CHOLLET, TRAINING_TIPS, ARCHITECTURE))
def dropout_too_high(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds dropout layers whose drop probability is above `arch.max-dropout`. A probability of 1
    (every activation dropped) is reported as an error.

    ## Why is this bad?
    The usual range is a fifth to a half. Above one half, most of the signal is thrown
    away at every step: the network underfits, trains slowly, and the train-time and test-time
    behaviour drift apart. At p = 1 the layer outputs zeros in training and nothing upstream
    learns.

    ## Example
    ```python
    nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.8), nn.Linear(128, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    ```

    ## Options
    - `arch.max-dropout`: highest drop probability accepted (default 0.5)
    """
    g = facts.graph
    for n in g.modules(*DROPOUTS):
        p = n.attrs.get("p")
        if not isinstance(p, (int, float)) or p <= opts.max_dropout:
            continue
        yield Hit(
            f"{n.type}(p={p:g}) drops {p:.0%} of its inputs" + (": nothing gets through in training" if p >= 1 else ""),
            location=n.target,
            evidence={"p": p, "max_dropout": opts.max_dropout},
            fix=f"use p between 0.2 and {opts.max_dropout:g}",
            severity=Severity.ERROR if p >= 1 else None,
        )


# -- ARC005 ---------------------------------------------------------------------------


def downstream_of(g: Graph, pred: Any) -> set[int]:
    """Ids of nodes with a node matching `pred` somewhere downstream."""
    out: set[int] = set()
    for n in reversed(g.nodes):
        if any((s.id in out) or pred(s) for s in g.succ(n)):
            out.add(n.id)
    return out


def upstream_of(g: Graph, pred: Any) -> set[int]:
    """Ids of nodes with a node matching `pred` somewhere upstream."""
    out: set[int] = set()
    for n in g.nodes:
        if any((p.id in out) or pred(p) for p in g.pred(n)):
            out.add(n.id)
    return out


def _has_conv_after(g: Graph) -> set[int]:
    return downstream_of(g, is_conv)


@rule(code="ARC005", name="dropout-on-conv-features", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(CHOLLET,))
def dropout_on_conv_features(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds element-wise dropout (`nn.Dropout`) applied to a convolutional feature map between
    two convolutions of the feature extractor. Dropout on a flattened vector before a dense
    layer, or in front of the network's last convolution (often a 1×1 classifier), is left alone.

    ## Why is this bad?
    Neighbouring pixels of a feature map are strongly correlated, so zeroing single pixels
    barely removes information: the next conv sees it through the neighbours, and the layer
    adds noise without the regularising effect. The advice is to keep dropout on the dense
    layers (or between the flatten and the first dense layer); inside the conv stack, drop whole
    channels (`nn.Dropout2d`) or blocks (DropBlock), or rely on batch norm and augmentation.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    conv_after = _has_conv_after(g)

    def through(m: Node) -> bool:
        return is_pass(m) or is_act(m) or is_norm(m) or "Pool" in m.type or "pool" in m.type

    for n in g.modules("Dropout", "AlphaDropout"):
        p = n.attrs.get("p")
        shp = n.output_shape or []
        if not p or len(shp) < 3 or math.prod(shp[2:]) <= 1:
            continue
        src = [m for m in back(g, n, through) if is_conv(m)]
        dst = [m for m in fwd(g, n, through) if is_conv(m) and m.id in conv_after]
        if src and dst:
            yield Hit(
                f"element-wise Dropout(p={p:g}) on a {'×'.join(map(str, shp[2:]))} conv feature map "
                f"between {src[0].target} and {dst[0].target}",
                location=n.target,
                evidence={"p": p, "feature_map": shp, "after": src[0].target, "before": dst[0].target},
                fix="drop whole channels with nn.Dropout2d (or use DropBlock), "
                    "or move the dropout to the dense layers",
            )


# -- ARC006 ---------------------------------------------------------------------------


def plain_runs(g: Graph) -> dict[int, tuple[int, int]]:
    """For each node, (weighted layers in the longest run ending there that no skip bypasses, id of the run's first layer).

    A merge (a residual add, a concatenation) ends every run: the gradient has a way around
    the layers before it. A product takes the run of its feature-map input, not of its gate.
    """
    run: dict[int, tuple[int, int]] = {}
    for n in g.nodes:
        if n.kind == "input":
            run[n.id] = (0, -1)
            continue
        reached = [i for i in n.inputs if i in run]
        if not reached:
            continue
        if is_merge(n):
            run[n.id] = (0, -1)
            continue
        if n.kind == "op" and base(n.type) == "mul" and len(reached) >= 2:
            same = [i for i in reached if shape_of(g, i) == n.output_shape]
            reached = same or reached
        r, start = max(run[i] for i in reached)
        if is_weighted(n):
            r, start = r + 1, (start if r else n.id)
        run[n.id] = (r, start)
    return run


@rule(code="ARC006", name="deep-plain-stack", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, TRANSFORMERS))
def deep_plain_stack(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds the longest run of weighted layers (convs, Linear, recurrent, attention) that no
    skip connection bypasses: a chain with no residual addition or concatenation anywhere
    along it. Fires when the run is longer than `arch.max-plain-depth`.

    ## Why is this bad?
    In a plain stack every gradient has to cross every layer. Past about twenty layers such
    nets train worse than shallower ones, not better (the degradation problem), and gradients
    vanish or explode. Residual additions or dense concatenations give the signal a short path
    and let depth pay off.

    ## Example
    ```python
    layers = [nn.Linear(64, 64) for _ in range(24)]
    nn.Sequential(*[m for l in layers for m in (l, nn.LayerNorm(64), nn.ReLU())])
    ```

    ## Use instead
    ```python
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 64), nn.ReLU())
        def forward(self, x):
            return x + self.f(x)
    nn.Sequential(*[Block() for _ in range(24)])
    ```

    ## Options
    - `arch.max-plain-depth`: longest run of weighted layers accepted without a skip connection (default 20)
    """
    g = facts.graph
    runs = plain_runs(g)
    if not runs:
        return
    end, (length, start) = max(runs.items(), key=lambda kv: (kv[1][0], -kv[0]))
    if length <= opts.max_plain_depth:
        return
    first_layer = g.nodes[start].target if start >= 0 else None
    yield Hit(
        f"{length} weighted layers in a row, from {first_layer} to {g.nodes[end].target}, "
        "with no skip connection around any of them",
        location=first_layer,
        evidence={"plain_run": length, "max_plain_depth": opts.max_plain_depth, "from": first_layer,
                  "to": g.nodes[end].target},
        fix="add residual connections (x + f(x)) every two or three layers, or make the stack shallower",
    )


# -- ARC007 ---------------------------------------------------------------------------


def weight_standardised(n: Node) -> bool:
    """A convolution that standardises its own weights (timm's StdConv2d, ScaledStdConv2d and their *Same
    twins, WSConv2d): with scaled residuals, the normaliser-free networks' (NFNet) stand-in for batch norm."""
    return n.kind == "module" and any(w in n.type for w in ("StdConv", "WSConv", "WeightStandardized"))


@rule(code="ARC007", name="deep-net-without-normalization", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, TRANSFORMERS, TRAINING_TIPS, HANDBOOK))
def deep_net_without_normalization(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Fires when the network is deeper than `arch.max-depth-without-norm` weighted layers (on
    its longest path) and has no normalisation layer at all: no batch, layer, group, instance
    or RMS norm and no weight-standardised convolution (NFNet's normaliser-free
    `ScaledStdConv2d`, `StdConv2d`, `WSConv2d`). SELU networks, which normalise themselves, and
    attention models (see TFM006) are left to other checks.

    ## Why is this bad?
    Without normalisation each layer's input distribution drifts as the layers before it
    learn, so a deep stack needs careful initialisation, small learning rates and patience, and
    often does not train at all. Normalisation layers keep activations on a stable scale,
    allow higher learning rates and make the model far less sensitive to its initialisation.

    ## Example
    ```python
    nn.Sequential(*[m for _ in range(14) for m in (nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())])
    ```

    ## Use instead
    ```python
    nn.Sequential(*[m for _ in range(14) for m in
                    (nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())])
    ```

    ## Options
    - `arch.max-depth-without-norm`: deepest stack of weighted layers accepted without any normalisation (default 12)
    """
    g = facts.graph
    if any(is_norm(n) or weight_standardised(n) for n in g.nodes):
        return
    if any(act_name(n) in ("SELU", "selu") for n in g.nodes if is_act(n)):
        return
    if has_attention(g):
        return
    depth = net_depth(g)
    if depth <= opts.max_depth_without_norm:
        return
    yield Hit(
        f"{depth} weighted layers deep and not a single normalisation layer",
        location=None,
        evidence={"depth": depth, "max_depth_without_norm": opts.max_depth_without_norm, "norm_layers": 0},
        fix="add BatchNorm after each conv (GroupNorm for small batches, LayerNorm for sequences and MLPs)",
    )


# -- ARC008 ---------------------------------------------------------------------------


def _square(n: Node) -> bool:
    k = kernel(n)
    return not k or len(set(k)) == 1


@rule(code="ARC008", name="missing-nonlinearity", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, HANDBOOK, TRANSFORMERS))
def missing_nonlinearity(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds two linear layers (Linear, conv, transposed conv) joined with nothing between them but
    reshapes, dropout or identities: no activation, normalisation, pooling or merge.

    Deliberate factorisations are left alone: depthwise then pointwise convs (a separable
    convolution), asymmetric kernel pairs (1×7 then 7×1), and low-rank pairs whose two weight
    matrices together are smaller than one full layer would be (LoRA-style `B(A(x))`).

    ## Why is this bad?
    The composition of two linear maps is one linear map. The pair adds parameters, compute
    and depth, but no expressive power: the model can represent exactly what a single layer
    (or, when the middle is narrow, a low-rank layer) could. Usually an activation was
    forgotten.

    ## Example
    ```python
    nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    for a in g.modules(*AFFINE):
        if a.attrs.get("groups", 1) != 1 or not _square(a):
            continue
        for b in fwd(g, a):
            if not is_affine(b) or b.attrs.get("groups", 1) != 1 or not _square(b):
                continue
            cin, mid = widths(a)
            _, cout = widths(b)
            if cin and mid and cout and mid * (cin + cout) < cin * cout:
                continue  # cheaper than one layer: a low-rank factorisation (LoRA-style), likely deliberate
            yield Hit(
                f"{a.type} ({a.target}) feeds {b.type} ({b.target}) with no activation between: "
                f"together they are one linear map",
                location=b.target,
                evidence={"first": a.target, "second": b.target, "first_type": a.type, "second_type": b.type,
                          "middle_width": mid},
                fix=f"put an activation (ReLU, GELU...) between {a.target} and {b.target}, or merge them into one layer",
            )


# -- ARC009 ---------------------------------------------------------------------------


@rule(code="ARC009", name="doubled-activation", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, HANDBOOK))
def doubled_activation(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds an activation applied straight to the output of another activation (ReLU after ReLU,
    GELU after ReLU, the same function twice), with no layer between them. A pair that ends
    the network (an output squashing) is left to the output rules, and compositions that
    build a new function (tanh of softplus, as in a hand-written Mish) are left alone.

    ## Why is this bad?
    The second function adds no capacity: ReLU of a ReLU is the same ReLU, and other
    rectifier pairs only bend the same positive half again. It usually means an activation was
    added twice, once inside a block and once around it.

    ## Example
    ```python
    nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.ReLU(), nn.Linear(128, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    outs = set(output_ids(g))
    for a in g.nodes:
        if not is_act(a):
            continue
        for b in fwd(g, a):
            if not is_act(b) or b.id in outs or not fwd(g, b):
                continue  # the pair ends the network: an output activation, for the output rules
            if not (act_name(a) in RECTIFIERS and act_name(b) in RECTIFIERS or act_name(a) == act_name(b)):
                continue  # a deliberate composition such as tanh(softplus(x))
            yield Hit(
                f"{act_name(b)} is applied to the output of {act_name(a)} ({a.target})",
                location=b.target,
                evidence={"first": act_name(a), "second": act_name(b), "first_location": a.target},
                fix="remove one of the two activations",
            )


# -- ARC010 ---------------------------------------------------------------------------


@rule(code="ARC010", name="small-receptive-field", family="arch", severity=Severity.INFO,
      needs=("report",), source=(ARCHITECTURE, TRANSFORMERS))
def small_receptive_field(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Compares the receptive field of the last spatial feature map with the input size. Fires
    when, along some axis, the last map's units see less than `arch.min-receptive-field-ratio`
    of the input.

    ## Why is this bad?
    A unit can only combine what falls in its receptive field. If the deepest features see a
    small patch, the model judges the image from local texture: objects larger than the field
    are never seen whole, and long-range structure is invisible, even when a global pool
    averages the patches at the end. Depth, striding, pooling and dilation are the tools to
    grow the field to the input's scale.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                  nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))  # 5×5 field on 64×64 images
    ```

    ## Use instead
    ```python
    def cbr(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    # strided convs between the 3×3 layers: fields 3, 7, 15, 31, 47 px on the 64×64 input
    nn.Sequential(*cbr(3, 16, 2), *cbr(16, 32, 2), *cbr(32, 32, 2), *cbr(32, 32, 2), *cbr(32, 32),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    ```

    ## Options
    - `arch.min-receptive-field-ratio`: smallest accepted receptive field of the last spatial map, as a fraction of the input size (default 0.5)
    """
    rep = facts.report
    rf = rep.receptive_field
    if rf is None or rf.status == "unavailable" or not rf.size or not rep.inputs:
        return
    if not any(lay.type in CONVS for lay in rep.layers):
        return  # not a convolutional model: its "field" is not a spatial window
    for lay in rep.layers:
        r, shp = lay.receptive_field, (lay.output_shape or [None])[0]
        if r is not None and r.global_ and shp and len(shp) >= 3 and math.prod(shp[2:]) > 1:
            return  # attention or a gate mixes the whole map while it is still spatial: the field is global
    shape = rep.inputs[0].shape
    nd = len(rf.size)
    sp = spatial(shape, nd)
    if len(sp) != nd:
        return
    ratios = [s / i for s, i in zip(rf.size, sp) if i > 1]
    if not ratios or min(ratios) >= opts.min_receptive_field_ratio:
        return
    last = None
    for lay in rep.layers:
        r = lay.receptive_field
        if r is not None and r.size and not r.global_ and list(r.size) == list(rf.size):
            last = lay.path
    size = "×".join(f"{s:g}" for s in rf.size)
    yield Hit(
        f"the last spatial feature map sees {size} px of a {'×'.join(map(str, sp))} input "
        f"({min(ratios):.0%} of it)" + assumed_note(facts),
        location=last,
        evidence={"receptive_field": list(rf.size), "input": sp, "ratio": round(min(ratios), 3),
                  "min_ratio": opts.min_receptive_field_ratio},
        fix="add depth, strided convs or pooling (or dilated convs, to keep the resolution) until the field "
            "covers the input",
    )


# -- ARC011 ---------------------------------------------------------------------------


@rule(code="ARC011", name="feature-map-smaller-than-kernel", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, CHOLLET, TRANSFORMERS))
def feature_map_smaller_than_kernel(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds convolutions whose input feature map is smaller, along some axis, than the window
    the kernel spans (dilation included), so much so that fewer than
    `arch.min-kernel-coverage` of the kernel's taps ever see the map: a 3×3 conv on a 2×2 or
    1×1 map, an atrous conv with a rate larger than the map.

    ## Why is this bad?
    Most of the kernel then multiplies padding. The weights of the outer taps never see data
    (on a 1×1 map a 3×3 conv is a 1×1 conv with nine times the weights), so the layer wastes
    parameters and compute. The network downsamples too much for its input size, or the input
    is smaller than the architecture was designed for.

    ## Example
    ```python
    # on 8×8 inputs: three stride-2 convs reach 1×1, then a 3×3 conv runs on that single pixel
    nn.Sequential(*[m for cin, cout, s in ((3, 16, 2), (16, 32, 2), (32, 32, 2), (32, 32, 1)) for m in
                    (nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())],
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    ```

    ## Use instead
    ```python
    # the same network on 32×32 inputs (maps 16, 8, 4, 4), or one stride-2 stage fewer on 8×8 inputs
    ```

    ## Options
    - `arch.min-kernel-coverage`: smallest share of a kernel's taps, averaged over the output positions, that must fall on the map (default 0.5)
    """
    g = facts.graph
    for n in g.modules(*CONVS):
        k = kernel(n)
        if not k or max(k) < 2:
            continue
        a = n.attrs
        dil = tup(a.get("dilation", 1), len(k))
        stride = tup(a.get("stride", 1), len(k))
        pad = a.get("padding", 0)
        sp = spatial(in_shape(g, n), len(k))
        if len(sp) != len(k) or len(dil) != len(k) or len(stride) != len(k):
            continue
        if isinstance(pad, str):
            pad = [((d * (kk - 1)) // 2 if pad == "same" else 0) for kk, d in zip(k, dil)]
        pad = tup(pad, len(k))
        ext = [d * (kk - 1) + 1 for kk, d in zip(k, dil)]
        if all(s_ >= e for s_, e in zip(sp, ext)):
            continue
        cover = math.prod(_coverage(*t) for t in zip(sp, k, stride, pad, dil))
        if cover >= opts.min_kernel_coverage:
            continue
        dilated = f" dilated {max(dil)}× (a {'×'.join(map(str, ext))} window)" if max(dil) > 1 else ""
        yield Hit(
            f"{'×'.join(map(str, k))} conv{dilated} runs on a {'×'.join(map(str, sp))} feature map: "
            f"only {cover:.0%} of its taps see the map, the rest read padding" + assumed_note(facts),
            location=n.target,
            evidence={"kernel": list(k), "dilation": list(dil), "window": ext, "feature_map": sp,
                      "coverage": round(cover, 3)},
            fix="downsample less before this layer, use a smaller kernel or dilation here, or feed a larger input",
        )


def _coverage(size: int, k: int, s: int, p: int, d: int) -> float:
    """Share of a conv's taps, over all its output positions along one axis, that land inside the input."""
    n_out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if n_out <= 0:
        return 0.0
    inside = sum(1 for o in range(n_out) for j in range(k) if 0 <= o * s - p + j * d < size)
    return inside / (n_out * k)


# -- ARC012 ---------------------------------------------------------------------------


@rule(code="ARC012", name="narrow-bottleneck", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(HANDBOOK,))
def narrow_bottleneck(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a layer that squeezes its input to a width `arch.bottleneck-ratio` times narrower than
    both its input and the width the next layer expands back to (1024 → 32 → 1024), with a
    non-linearity in between. Gates that end in a sigmoid (squeeze-and-excitation) and purely
    linear low-rank pairs (LoRA-style adapters) are left alone.

    ## Why is this bad?
    Everything downstream can only use what passes the narrowest layer. A squeeze this hard
    throws information away that the following expansion cannot recover, and makes the layers
    around it mostly redundant. The usual bottleneck blocks squeeze by about 4×. In an
    autoencoder the narrow code is the point, and this finding can be ignored there.

    ## Example
    ```python
    nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 16), nn.ReLU(),
                  nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU(),
                  nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))
    ```

    ## Options
    - `arch.bottleneck-ratio`: squeeze factor, against both neighbours, at which the rule fires (default 16)
    """
    g = facts.graph

    def through(m: Node) -> bool:
        return is_pass(m) or is_act(m) or is_norm(m)

    for b in g.modules(*AFFINE):
        mid, out = widths(b)
        if not mid or not out or out < opts.bottleneck_ratio * mid:
            continue
        if any(base(m.type) in GATES or m.type in GATES for m in fwd(g, b, lambda m: is_pass(m) or is_norm(m))):
            continue  # an SE-style gate
        for a in back(g, b, through):
            if not is_affine(a) or a in back(g, b):
                continue  # nothing non-linear between: a low-rank factorisation (LoRA-style), not a squeeze
            cin, amid = widths(a)
            if amid != mid or not cin or cin < opts.bottleneck_ratio * mid:
                continue
            yield Hit(
                f"{a.target} squeezes {cin} → {mid} and {b.target} expands {mid} → {out}: "
                f"a {min(cin, out) / mid:.0f}× bottleneck",
                location=a.target,
                evidence={"in_width": cin, "bottleneck_width": mid, "out_width": out,
                          "ratio": round(min(cin, out) / mid, 1), "expands_at": b.target},
                fix=f"widen the bottleneck to at least {math.ceil(min(cin, out) / 4)} "
                    "(about a 4× squeeze), unless a narrow code is intended",
            )


# -- ARC013 ---------------------------------------------------------------------------


@rule(code="ARC013", name="saturating-hidden-activation", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, HANDBOOK, TRANSFORMERS))
def saturating_hidden_activation(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    In a network deeper than `arch.saturating-min-depth` weighted layers, finds sigmoid or tanh
    used as hidden activations: their output feeds another weighted layer. Fires when there
    are at least two, reported once per model. Gates (a sigmoid that multiplies a tensor, as in
    squeeze-and-excitation or LSTMs), output activations and a single squashing before the
    output layer (a "pre-logits" tanh) are left alone.

    ## Why is this bad?
    Sigmoid and tanh saturate: for inputs a few units from zero their slope is nearly zero,
    and the sigmoid's slope is at most 1/4 even at its best. Chained through many layers, these
    factors multiply and the gradient reaching the early layers vanishes. ReLU-family
    activations (ReLU, Leaky ReLU, GELU, SiLU) keep a slope of one on their active side.

    ## Example
    ```python
    nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(64, 64), nn.Sigmoid())], nn.Linear(64, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(64, 64), nn.ReLU())], nn.Linear(64, 10))
    ```

    ## Options
    - `arch.saturating-min-depth`: depth in weighted layers from which hidden sigmoid/tanh is reported (default 5)
    """
    g = facts.graph
    depth = net_depth(g)
    if depth < opts.saturating_min_depth:
        return
    outs = set(output_ids(g))
    sites = []
    for n in g.nodes:
        if not is_act(n) or act_name(n) not in SATURATING:
            continue
        users = fwd(g, n, lambda m: is_pass(m) or is_norm(m))
        if not users or not all(is_weighted(u) for u in users):
            continue
        if all(u.id in outs or not fwd(g, u) for u in users):
            continue  # feeds the output layer only: a head squashing (as ViT's pre-logits tanh), not a deep chain
        sites.append((n, users[0]))
    if len(sites) < 2:
        return
    names = sorted({act_name(n) for n, _ in sites})
    yield Hit(
        f"{len(sites)} hidden {'/'.join(names)} activations in a {depth}-layer network "
        f"(first at {sites[0][0].target}, feeding {sites[0][1].target})",
        location=sites[0][0].target,
        evidence={"activations": names, "count": len(sites), "depth": depth,
                  "locations": [n.target for n, _ in sites[:20]]},
        fix="use ReLU, LeakyReLU, GELU or SiLU in hidden layers (with He initialisation)",
    )


# -- ARC014 ---------------------------------------------------------------------------


def _conv_macs(n: Node) -> int:
    k = kernel(n)
    cin, cout = widths(n)
    sp = spatial(n.output_shape, len(k))
    if not k or not cin or not cout or len(sp) != len(k):
        return 0
    return math.prod(k) * (cin // max(int(n.attrs.get("groups", 1)), 1)) * cout * math.prod(sp) * (
        n.output_shape[0] if len(n.output_shape or []) > len(k) + 1 else 1)


@rule(code="ARC014", name="separable-conv-candidate", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(ARCHITECTURE, HANDBOOK, TRANSFORMERS))
def separable_conv_candidate(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Adds up the multiply-adds of the dense (groups = 1) k×k convolutions with at least
    `arch.separable-min-channels` input and output channels. When they make up more than
    `arch.separable-min-share` of the model's compute, it estimates what depthwise-separable
    convolutions (a depthwise k×k then a pointwise 1×1) would cost instead. Reported once per
    model, at the costliest such conv.

    ## Why is this bad?
    A dense k×k conv mixes space and channels in one step, at k²·C_in·C_out multiply-adds per
    pixel. Splitting the two costs k²·C_in + C_in·C_out: for a 3×3 conv with 256 channels, about
    8× less. Where compute, latency or energy is limited (mobile, embedded, real time), this is
    the cheapest large saving, as MobileNet and Xception show; accuracy usually drops a little.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                  nn.Conv2d(128, 128, 3, padding=1))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Conv2d(3, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                  nn.Conv2d(128, 128, 3, padding=1, groups=128),  # depthwise
                  nn.Conv2d(128, 128, 1))                          # pointwise
    ```

    ## Options
    - `arch.separable-min-channels`: narrowest conv (input and output channels) counted (default 64)
    - `arch.separable-min-share`: share of the model's multiply-adds those convs must reach (default 0.5)
    """
    g = facts.graph
    total = facts.report.flops.macs if facts.report.flops and facts.report.flops.macs else 0
    cands = []
    for n in g.modules(*CONVS):
        k = kernel(n)
        cin, cout = widths(n)
        if not k or min(k) < 2 or n.attrs.get("groups", 1) != 1 or not cin or not cout:
            continue
        if cin < opts.separable_min_channels or cout < opts.separable_min_channels:
            continue
        macs = _conv_macs(n)
        if macs:
            cands.append((macs, n))
    if not cands or not total:
        return
    dense = sum(m for m, _ in cands)
    share = dense / total
    if share < opts.separable_min_share:
        return
    sep = 0
    for macs, n in cands:
        cin, cout = widths(n)
        k = math.prod(kernel(n))
        sep += macs * (k * cin + cin * cout) / (k * cin * cout)
    top = max(cands, key=lambda x: x[0])[1]
    yield Hit(
        f"{plural(len(cands), 'dense k×k conv')} carry {share:.0%} of the compute; depthwise-separable convs "
        f"would do their work with about {dense / max(sep, 1):.1f}× fewer multiply-adds",
        location=top.target,
        evidence={"convs": len(cands), "macs": dense, "share": round(share, 3), "separable_macs": int(sep),
                  "saving_factor": round(dense / max(sep, 1), 2)},
        fix="where compute is tight, replace dense k×k convs by a depthwise k×k conv (groups=C) and a 1×1 conv",
    )


# -- ARC015 ---------------------------------------------------------------------------


@rule(code="ARC015", name="width-not-multiple-of-8", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(TRANSFORMERS, ARCHITECTURE))
def width_not_multiple_of_8(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Lists the hidden convs and Linear layers whose input or output width (channels, features)
    is not a multiple of `arch.width-multiple`. The widths the data fixes, the input of the
    first layers and the output of the last ones (the number of classes), are not counted.
    Fires when those layers carry at least `arch.width-min-share` of the compute (tiny layers
    such as squeeze-and-excitation gates do not matter for speed). Reported once per model.

    ## Why is this bad?
    GPU tensor cores work on tiles: in fp16/bf16 a matrix multiply runs at full speed only when
    its inner and outer sizes are multiples of 8 (16 for int8). A layer with 100 channels is
    padded or falls back to slower kernels, so rounding widths up often makes the model faster
    despite the extra parameters.

    ## Example
    ```python
    nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Linear(64, 104), nn.ReLU(), nn.Linear(104, 10))
    ```

    ## Options
    - `arch.width-multiple`: the multiple hidden widths should be (default 8)
    - `arch.width-min-share`: share of the model's multiply-adds the misaligned layers must carry (default 0.05)
    """
    g = facts.graph
    mult = opts.width_multiple
    if mult <= 1:
        return
    macs = {lay.path: lay.macs for lay in facts.report.layers}
    total = facts.report.flops.macs or sum(macs.get(n.target, 0) for n in g.modules(*AFFINE))
    before, after = upstream_of(g, is_weighted), downstream_of(g, is_weighted)
    bad: list[tuple[Node, str, int]] = []
    for n in g.modules(*AFFINE):
        cin, cout = widths(n)
        if cin and cin % mult and n.id in before:
            bad.append((n, "in", cin))
        elif cout and cout % mult and n.id in after:
            bad.append((n, "out", cout))
    seen: set[str] = set()
    bad = [b for b in bad if not (b[0].target in seen or seen.add(b[0].target))]
    share = sum(macs.get(n.target, 0) for n, _, _ in bad) / total if total else 1.0
    if not bad or share < opts.width_min_share:
        return
    shown = ", ".join(f"{n.target} ({side} {w})" for n, side, w in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    yield Hit(
        f"{plural(len(bad), 'layer')} ({share:.0%} of the compute) with a hidden width that is not a multiple "
        f"of {mult}: {shown}{more}",
        location=bad[0][0].target,
        evidence={"layers": len(bad), "widths": {n.target: w for n, _, w in bad[:20]}, "multiple": mult,
                  "macs_share": round(share, 3)},
        fix=f"round hidden widths up to a multiple of {mult} for tensor-core speed in fp16/bf16",
    )


# -- ARC016 ---------------------------------------------------------------------------


@rule(code="ARC016", name="encoder-decoder-without-skips", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, TRANSFORMERS))
def encoder_decoder_without_skips(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Recognises a dense-prediction network (it downsamples by `arch.skip-min-downsample` or more,
    then upsamples back to at least half the input size, with an output width different from
    the input's, unlike an autoencoder) and fires when no skip connection carries encoder
    features into the decoder: no concatenation or addition after the first upsampling joins
    a tensor computed before it.

    ## Why is this bad?
    Striding and pooling buy receptive field and cheap compute, but the fine detail (edges,
    boundaries, thin structures) is gone by the bottleneck, and upsampling cannot invent it
    back: segmentations come out blobby. U-Net and FPN-style skips feed the high-resolution
    encoder maps to the decoder so it can place boundaries precisely.

    ## Example
    ```python
    class Seg(nn.Module):  # 64×64 → 8×8 → 64×64, five classes, nothing crosses over
        def forward(self, x):
            f1 = self.e1(x); f2 = self.e2(f1); y = self.mid(self.e3(f2))
            y = self.d3(self.u3(y))
            y = self.d2(self.u2(y))
            return self.head(self.u1(y))
    ```

    ## Use instead
    ```python
    class Seg(nn.Module):  # U-Net: the decoder concatenates the encoder map of the same size
        def forward(self, x):
            f1 = self.e1(x); f2 = self.e2(f1); y = self.mid(self.e3(f2))
            y = self.d3(torch.cat([self.u3(y), f2], 1))
            y = self.d2(torch.cat([self.u2(y), f1], 1))
            return self.head(self.u1(y))
    ```

    ## Options
    - `arch.skip-min-downsample`: total downsampling factor from which the decoder is expected to get skips (default 8)
    """
    g = facts.graph
    ins = [n for n in g.nodes if n.kind == "input" and n.output_shape and len(n.output_shape) >= 3]
    if not ins:
        return
    x = ins[0].output_shape
    nd = len(x) - 2
    sp_in = x[2:]

    def grows(n: Node) -> bool:  # a real upsampling, not the broadcast of a pooled vector
        src = spatial(in_shape(g, n), nd)
        out = spatial(n.output_shape, nd)
        return len(src) == nd == len(out) and math.prod(src) > 1 and math.prod(out) > math.prod(src)

    ups = [n for n in g.nodes if is_upsample(n) and grows(n)]
    if not ups:
        return
    outs = [g.nodes[i] for i in output_ids(g)]
    out = next((o for o in outs if o.output_shape and len(o.output_shape) == len(x)), None)
    if out is None:
        return
    sp_out = out.output_shape[2:]
    if any(o * 2 < i for o, i in zip(sp_out, sp_in)) or out.output_shape[1] == x[1]:
        return  # not a dense prediction, or a reconstruction (autoencoder): no encoder skips expected
    u0 = ups[0]
    low = spatial(in_shape(g, u0), nd)
    factor = (math.prod(sp_in) / max(math.prod(low), 1)) ** (1 / nd)
    if factor < opts.skip_min_downsample:
        return
    after = {u0.id}  # everything computed from the first upsampling's output
    for n in g.nodes[u0.id + 1:]:
        if any(i in after for i in n.inputs):
            after.add(n.id)
    for i in after:
        n = g.nodes[i]
        if is_merge(n) and any(j not in after for j in n.inputs):
            return  # a tensor from the encoder side joins the decoder
    yield Hit(
        f"downsamples {factor:.0f}× and upsamples back to {'×'.join(map(str, sp_out))} with no skip connection "
        f"from the encoder",
        location=u0.target if u0.kind == "module" else (u0.parent or u0.target),
        evidence={"downsample_factor": round(factor, 1), "input": sp_in, "output": sp_out,
                  "upsampling_layers": len(ups)},
        fix="concatenate (U-Net) or add (FPN) the encoder's high-resolution feature maps into the decoder",
    )


# -- ARC017 ---------------------------------------------------------------------------


@rule(code="ARC017", name="unpadded-conv", family="arch", severity=Severity.INFO,
      needs=("graph",), source=(ARCHITECTURE, CHOLLET, TRANSFORMERS))
def unpadded_conv(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds stride-1 convolutions with a kernel wider than 1 and no padding, not preceded by an
    explicit padding layer: each one shaves k-1 pixels off the feature map.

    ## Why is this bad?
    Without padding the map shrinks at every layer and the border pixels take part in fewer
    windows than the centre ones, so information at the edges is under-used and then lost.
    A deep stack of such convs can eat a large part of a small input. `padding="same"`
    (k // 2 for odd kernels) keeps the size; downsampling is better done on purpose, with a
    stride or a pool.

    ## Example
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU())  # 32×32 → 30×30
    ```

    ## Use instead
    ```python
    nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())  # 32×32 → 32×32
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.modules(*CONVS):
        k = kernel(n)
        a = n.attrs
        if not k or max(k) < 2 or any(s != 1 for s in tup(a.get("stride", 1), len(k))):
            continue
        pad = a.get("padding", 0)
        if isinstance(pad, str):
            if pad != "valid":
                continue
            pad = 0
        if any(p != 0 for p in tup(pad, len(k))):
            continue
        if any(m.type in PADDERS or base(m.type) in PADDERS for m in back(g, n)):
            continue
        sp = spatial(in_shape(g, n), len(k))
        yield Hit(
            f"{'×'.join(map(str, k))} conv without padding shrinks its map"
            + (f" from {'×'.join(map(str, sp))} to {'×'.join(str(s - kk + 1) for s, kk in zip(sp, k))}"
               + assumed_note(facts) if sp else ""),
            location=n.target,
            evidence={"kernel": list(k), "padding": 0, "feature_map": sp},
            fix=f"pass padding={k[0] // 2 if len(set(k)) == 1 else tuple(x // 2 for x in k)} "
                "(or padding='same') to keep the size",
        )
