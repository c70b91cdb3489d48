"""Architecture pitfalls from the field: wiring mistakes that run without an error and train worse.

Each rule here is a classic bug report (Stack Overflow, GitHub issues) turned into a pattern on the
traced graph: dropout feeding a batch norm, a transposed convolution that paints a checkerboard, a
Linear applied to a feature map's width, BatchNorm1d over the time axis, one module registered twice,
a recurrent output indexed on its batch axis, batch-norm statistics that never update, and a
feature map that shrinks to nothing (the forward fails; the finding says where and what input works).
"""
from __future__ import annotations

import math
from typing import Iterator

from dldoctor.report.facts import Facts, Graph, Node, walk
from dldoctor.rules.helpers.graph import (
    AFFINE,
    DROPOUT_OPS,
    DROPOUTS,
    EMBEDDINGS,
    LINEARS,
    MORE_VIEW_OPS,
    PLAIN_TCONVS,
    RNNS,
    SHAPE_MODULES,
    VIEW_OPS,
    base,
    is_act,
    is_batchnorm,
    tup,
)
from dldoctor.rules.options import ArchOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import ARCHITECTURE, CHOLLET, HANDBOOK, TRAINING_TIPS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   TRAINING_TIPS: batch norm and dropout, used together
#   ARCHITECTURE: CNN kernels, strides and receptive fields; batch norm; RNNs for sequences
#   CHOLLET: flatten before the dense layers of a convnet
#   HANDBOOK: unit-test layers (a shared layer, a wrong axis)
# Papers and threads cited in the docstrings where no seed has the tip.

_VIEWS = VIEW_OPS | MORE_VIEW_OPS


def _is_view(n: Node) -> bool:
    return (n.kind == "module" and n.type in SHAPE_MODULES) or (n.kind == "op" and base(n.type) in _VIEWS)


def _is_dropout(n: Node) -> bool:
    return (n.kind == "module" and n.type in DROPOUTS) or (n.kind == "op" and base(n.type) in DROPOUT_OPS)


def _after(g: Graph, n: Node, through=_is_view) -> list[Node]:
    return walk(g.succ(n), g.succ, through)


def _before(g: Graph, n: Node, through=_is_view) -> list[Node]:
    return walk(g.pred(n), g.pred, through)


# -- ARC018 -----------------------------------------------------------------------------------


@rule(code="ARC018", name="dropout-before-batchnorm", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(TRAINING_TIPS, ARCHITECTURE))
def dropout_before_batchnorm(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a dropout layer placed between a convolution or linear layer and the batch norm that
    normalises its output (conv/linear -> dropout -> BatchNorm), and reports it at the dropout.

    ## Why is this bad?
    During training the batch norm measures the variance of features that dropout has thinned
    and rescaled; at inference dropout is switched off and the features reaching the batch norm
    have a different variance than the one it stored. Every later layer then sees shifted
    statistics, and the model scores worse in eval mode than its training loss promised (Li et
    al., "Understanding the disharmony between dropout and batch normalization by variance
    shift", CVPR 2019). The usual order is conv/linear -> batch norm -> activation, with dropout,
    if any, after the activation and after the last batch norm.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.Dropout(0.3), nn.BatchNorm1d(64), nn.ReLU(),
                          nn.Linear(64, 10))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(64, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    for d in g.nodes:
        if not _is_dropout(d) or (d.kind == "module" and not d.attrs.get("p")):
            continue
        src = [m for m in _before(g, d) if m.kind == "module" and m.type in AFFINE]
        bns = [m for m in _after(g, d) if is_batchnorm(m) and "BatchNorm" in m.type]
        if src and bns:
            where = d.target if d.kind == "module" else f"{d.target} (in {d.parent or 'the model'})"
            yield Hit(f"dropout sits between {src[0].type} '{src[0].target}' and {bns[0].type} '{bns[0].target}': "
                      "the batch norm learns the statistics of dropped-out features and sees others at inference",
                      location=where,
                      evidence={"dropout": d.type, "p": d.attrs.get("p"), "layer": src[0].target,
                                "norm": bns[0].target},
                      fix="move the dropout after the batch norm and its activation (or remove it)")


# -- ARC019 -----------------------------------------------------------------------------------


@rule(code="ARC019", name="feature-map-collapses", family="arch", severity=Severity.ERROR,
      needs=("report",), source=(ARCHITECTURE,))
def feature_map_collapses(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Reports a convolutional network whose feature map shrinks below the window of one of its
    convolutions or poolings on the given input, so that the forward pass fails ("Output size is
    too small", "Kernel size can't be greater than actual input size"). It names the layer where
    the spatial size collapses and the smallest input size that runs, worked out by walking the
    kernels, strides, paddings and dilations of the layers on the way back from a 1x1 output.

    ## Why is this bad?
    Every unpadded or strided window shrinks the map; a network designed for 224x224 images
    (five stride-2 stages) has nothing left of a 28x28 input by its fourth stage, and a deep
    stack of 3x3 convolutions without padding loses two pixels per layer. PyTorch only says that
    some output is too small; knowing which layer runs out of pixels, and what input size the
    network needs, tells whether to upsample the data, pad the convolutions or drop a stage.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10))  # on a 12×12 input
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10))  # 12×12 is enough with padding
    ```

    ## Options
    None.
    """
    from dldoctor.collect.collapse import parse_note

    for d in facts.report.diagnostics:
        info = parse_note(d.message)
        if info is None:
            continue
        have = "x".join(str(x) for x in info["input"])
        need = "x".join(str(x) for x in info["min_input"]) if info.get("min_input") else None
        at = "x".join(str(x) for x in info["size"])
        yield Hit(f"the feature map collapses at '{info['layer']}' ({info['type']}): its input is {at}, smaller than "
                  f"its {info['window']} window, on a {have} input"
                  + (f"; the smallest input that clears every convolution and pooling window is {need}"
                     if need else ""),
                  location=info["layer"], evidence=info,
                  fix=(f"feed at least {need} (resize the data)" if need else "feed a larger input")
                  + ", pad the convolutions (padding=k//2) or remove a downsampling stage")


# -- ARC020 -----------------------------------------------------------------------------------


@rule(code="ARC020", name="checkerboard-transposed-conv", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE,))
def checkerboard_transposed_conv(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a strided transposed convolution whose kernel size is not a multiple of its stride
    (ConvTranspose2d(kernel_size=3, stride=2)), along any axis.

    ## Why is this bad?
    With such a kernel the output positions receive an uneven number of contributions: some get
    two kernel taps, their neighbours one, in a fixed pattern. The upsampled maps carry a
    checkerboard of stronger and weaker pixels that training has to fight at every layer and
    that often stays visible in generated images and masks (Odena, Dumoulin and Olah,
    "Deconvolution and checkerboard artifacts", Distill 2016). A kernel divisible by the stride
    (4 with stride 2) overlaps evenly; resize-then-convolve avoids the problem altogether.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(16, 8, kernel_size=3, stride=2, padding=1))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(16, 8, kernel_size=4, stride=2, padding=1))
    ```

    ## Options
    None.
    """
    for n in facts.graph.modules(*PLAIN_TCONVS):
        nd = {"ConvTranspose1d": 1, "ConvTranspose2d": 2, "ConvTranspose3d": 3}[n.type]
        k, s = tup(n.attrs.get("kernel_size"), nd), tup(n.attrs.get("stride"), nd)
        uneven = [i for i, (a, b) in enumerate(zip(k, s)) if b > 1 and a % b]
        if uneven:
            ks, ss = "x".join(map(str, k)), "x".join(map(str, s))
            yield Hit(f"{n.type} '{n.target}' has kernel {ks} with stride {ss}: the kernel is not a multiple of the "
                      "stride, so its outputs overlap unevenly (checkerboard artifacts)",
                      location=n.target, evidence={"kernel_size": list(k), "stride": list(s)},
                      fix=f"use a kernel that divides by the stride (kernel_size={s[uneven[0]] * 2} for stride "
                          f"{s[uneven[0]]}), or upsample (nn.Upsample) then convolve")


# -- ARC021 -----------------------------------------------------------------------------------

_GRID_MAKERS = frozenset({"Conv2d", "Conv3d", "MaxPool2d", "MaxPool3d", "AvgPool2d", "AvgPool3d",
                          "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
                          "BatchNorm2d", "BatchNorm3d", "LazyConv2d", "LazyConv3d"})


def _elementwise(n: Node) -> bool:
    return _is_dropout(n) or is_act(n) or (n.kind == "module" and n.type == "Identity")


@rule(code="ARC021", name="linear-over-spatial-axis", family="arch", severity=Severity.ERROR,
      needs=("graph",), source=(CHOLLET, ARCHITECTURE))
def linear_over_spatial_axis(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a Linear layer fed directly with a channels-first feature map, (N, C, H, W), from a
    2-D or 3-D convolution, pooling or batch norm, with no flatten or permute between them.
    `nn.Linear` acts on the last axis, so it mixes the map's width, not its channels.

    ## Why is this bad?
    The forward pass runs whenever the map's width happens to equal `in_features` (often 1
    after a global pool, or a small fixed width), so nothing fails: the "classifier" is applied
    to every row of every channel separately and the model outputs a feature map of scores
    instead of one score vector per sample. The usual cause is a missing `nn.Flatten()` (or
    `x.flatten(1)`) before the dense head, or a forgotten permute to channels-last.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Linear(8, 10))  # on a 16×16 input: the map is 8 wide
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.modules(*LINEARS):
        src = [m for m in _before(g, n, _elementwise)]
        shp = g.node(n.inputs[0]).output_shape if n.inputs and n.inputs[0] >= 0 else None
        if len(src) != 1 or src[0].kind != "module" or src[0].type not in _GRID_MAKERS or not shp or len(shp) < 4:
            continue
        p = src[0]
        yield Hit(f"Linear '{n.target}' is applied to the {'x'.join(map(str, shp[1:]))} (C, H, W) output of "
                  f"{p.type} '{p.target}' with no flatten: it mixes the last spatial axis (width {shp[-1]}), "
                  "not the channels",
                  location=n.target,
                  evidence={"input_shape": shp, "source": p.target, "in_features": n.attrs.get("in_features")},
                  fix="flatten before the dense layer (nn.Flatten(), or a global pool then nn.Flatten()), or permute "
                      "to channels-last if the Linear is meant to mix channels")


# -- ARC022 -----------------------------------------------------------------------------------

_FEATURES_LAST = LINEARS | EMBEDDINGS


def _features_last_input(g: Graph, n: Node) -> tuple[list[int], list[Node]] | None:
    """(input shape, its features-last sources) when `n` reads a 3-D (N, T, F) output of a Linear or Embedding
    (through elementwise ops) whose T and F differ, so that axis 1 is time where `n` expects channels; else None."""
    shp = g.node(n.inputs[0]).output_shape if n.inputs and n.inputs[0] >= 0 else None
    if not shp or len(shp) != 3 or shp[1] == shp[2]:
        return None
    src = [m for m in _before(g, n, _elementwise) if m.kind == "module" and m.type in _FEATURES_LAST]
    return (shp, src) if src else None


@rule(code="ARC022", name="batchnorm1d-over-time-axis", family="arch", severity=Severity.ERROR,
      needs=("graph",), source=(ARCHITECTURE, TRAINING_TIPS))
def batchnorm1d_over_time_axis(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a BatchNorm1d that receives a (batch, time, features) tensor straight from a Linear or
    an Embedding, whose features are on the last axis. BatchNorm1d normalises axis 1 of a 3-D
    input, which here is the time (sequence) axis.

    ## Why is this bad?
    BatchNorm1d expects (N, C, L) with the channels on axis 1. Given (N, T, F), it keeps one mean
    and variance per time step and pools them over the features: positions are normalised
    against each other, the features are not normalised at all, and the layer only runs when
    `num_features` equals the sequence length, so every other length fails at inference. The fix
    is a transpose around the norm, or a LayerNorm over the features.

    ## Example
    ```python
    model = nn.Sequential(nn.Embedding(100, 32), nn.BatchNorm1d(16), nn.Linear(32, 4))  # (N, 16) tokens
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Embedding(100, 32), nn.LayerNorm(32), nn.Linear(32, 4))
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.modules("BatchNorm1d", "LazyBatchNorm1d"):
        found = _features_last_input(g, n)
        if found is None:
            continue
        shp, src = found
        yield Hit(f"BatchNorm1d '{n.target}' normalises axis 1 of the (N, T, F) = {tuple(shp)} output of "
                  f"{src[0].type} '{src[0].target}': the {shp[1]} time steps, not the {shp[2]} features",
                  location=n.target, evidence={"input_shape": shp, "source": src[0].target,
                                               "num_features": n.attrs.get("num_features")},
                  fix=f"normalise the features: nn.LayerNorm({shp[2]}), or transpose to (N, F, T) around "
                      f"BatchNorm1d({shp[2]})")


# -- ARC023 -----------------------------------------------------------------------------------


@rule(code="ARC023", name="module-registered-twice", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(HANDBOOK,))
def module_registered_twice(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a layer with weights that a `nn.Sequential` runs more than once: the same module
    object was put at two positions (`layer = nn.Linear(64, 64)` then
    `nn.Sequential(layer, nn.ReLU(), layer)`, or `[block] * n`).

    ## Why is this bad?
    The positions share one set of weights: the model has fewer parameters than it looks, its
    depth is partly an illusion, and `state_dict` keeps only the first name. It is nearly always
    an accident (a list built with `*`, a module reused while building a stack); where sharing is
    intended, a loop in `forward` says so. Shared activations without weights are left alone.

    ## Example
    ```python
    layer = nn.Linear(64, 64)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), layer, nn.ReLU(), layer, nn.ReLU(), nn.Linear(64, 10))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64),
                          nn.ReLU(), nn.Linear(64, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    calls: dict[str, list[Node]] = {}
    for n in g.modules():
        if n.attrs.get("params") and (g.containers.get(n.parent or "") or {}).get("type") == "Sequential":
            calls.setdefault(n.target, []).append(n)
    for path, ns in calls.items():
        if len(ns) > 1 and len({n.parent for n in ns}) == 1:
            yield Hit(f"{ns[0].type} '{path}' runs {len(ns)} times in the Sequential "
                      f"'{ns[0].parent or 'the model'}': the same module object sits at {len(ns)} positions and "
                      "they share one set of weights",
                      location=path, evidence={"calls": len(ns), "params": ns[0].attrs.get("params")},
                      fix="build a new module for each position (a list comprehension, copy.deepcopy), "
                          "not the same object twice")


# -- ARC024 -----------------------------------------------------------------------------------


@rule(code="ARC024", name="rnn-output-indexed-on-batch", family="arch", severity=Severity.ERROR,
      needs=("graph",), source=(ARCHITECTURE,))
def rnn_output_indexed_on_batch(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds an RNN, LSTM or GRU whose output is indexed along its batch axis: `out[:, -1]` with
    `batch_first=False` (axis 1 is the batch), or `out[-1]` on the sequence output with
    `batch_first=True` (axis 0 is the batch). The index meant "the last time step" and picks
    one sample instead.

    ## Why is this bad?
    The forward pass runs and the shapes often still fit the next layer, so nothing fails: every
    prediction is computed from one sample of the batch (or one time step of every sample is
    read as if it were a sequence). A frequent mix-up with PyTorch's time-first default layout,
    and one that a model trained this way cannot learn around.

    ## Example
    ```python
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 16)  # batch_first=False: (T, N, F)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])  # axis 1 is the batch
    model = Net()
    ```

    ## Use instead
    ```python
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 16)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[-1])  # the last time step
    model = Net()
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.modules(*RNNS):
        out = n.output_shape
        if not out or len(out) != 3:
            continue
        bf = bool(n.attrs.get("batch_first"))
        for s in _after(g, n):
            if s.kind != "op" or base(s.type) != "select" or not s.attrs.get("args"):
                continue
            dim = s.attrs["args"][0]
            if not isinstance(dim, int):
                continue
            picked = s.output_shape or []
            if not bf and dim in (1, -2):
                bad = True
            elif bf and dim in (0, -3):  # the sequence output (N, T, H) gives (T, H); h_n (L, N, H) gives (N, H)
                bad = picked == out[1:] and out[1] != out[0]
            else:
                bad = False
            if bad:
                axis = "1" if not bf else "0"
                yield Hit(f"the output of {n.type} '{n.target}' (batch_first={bf}) is indexed on axis {axis}, its "
                          "batch axis: the index picks one sample, not the last time step",
                          location=n.target, evidence={"batch_first": bf, "select_dim": dim, "output_shape": out},
                          fix=("index the time axis (out[-1] for batch_first=False, out[:, -1] for batch_first=True), "
                               "or set batch_first to match how the data is laid out"))
                break


# -- ARC025 -----------------------------------------------------------------------------------


@rule(code="ARC025", name="batchnorm-statistics-frozen", family="arch", severity=Severity.WARNING,
      needs=("graph",), source=(ARCHITECTURE, TRAINING_TIPS))
def batchnorm_statistics_frozen(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds batch norms that track running statistics with `momentum=0`: the running mean and
    variance never move from their initial 0 and 1, however long the model trains.

    ## Why is this bad?
    In training the layer normalises with each batch's statistics; in eval mode it uses the
    running ones, which with momentum 0 are still the initial mean 0 and variance 1. The model
    evaluates on features that were never normalised, and its eval accuracy falls far below its
    training accuracy with no error anywhere. The setting usually comes from a misread of the
    momentum convention (PyTorch's momentum is the weight of the new batch, 0.1 by default,
    the opposite of Keras' 0.99), or from an attempt to freeze the statistics, which
    `module.eval()` on the norm does instead.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, momentum=0.0),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, momentum=0.1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    ```

    ## Options
    None.
    """
    seen: set[str] = set()
    for n in facts.graph.modules():
        if n.target in seen or "BatchNorm" not in n.type:
            continue
        seen.add(n.target)
        m = n.attrs.get("momentum")
        if n.attrs.get("track_running_stats") and isinstance(m, (int, float)) and not isinstance(m, bool) \
                and math.isclose(float(m), 0.0):
            yield Hit(f"{n.type} '{n.target}' has momentum=0: its running statistics never update, so eval mode "
                      "normalises with the initial mean 0 and variance 1",
                      location=n.target, evidence={"momentum": m},
                      fix="use PyTorch's default momentum=0.1 (the new batch's weight, not Keras' 0.99); to freeze "
                          "the statistics, call .eval() on the norm instead")



# -- ARC026 -----------------------------------------------------------------------------------


@rule(code="ARC026", name="conv1d-over-feature-axis", family="arch", severity=Severity.ERROR,
      needs=("graph",), source=(ARCHITECTURE,))
def conv1d_over_feature_axis(facts: Facts, opts: ArchOptions) -> Iterator[Hit]:
    """## What it does
    Finds a Conv1d fed directly with the (batch, time, features) output of an Embedding or a
    Linear, with no transpose between them. Conv1d reads (N, C, L): it takes the time steps as
    channels and slides along the features.

    ## Why is this bad?
    A text or signal CNN meant to slide a window over time instead mixes all time steps at once
    and convolves across embedding dimensions, which have no order. It runs whenever
    `in_channels` equals the sequence length, so nothing fails at a fixed length; the model just
    learns far less, and any other length fails at inference. The usual cause is a forgotten
    `x.transpose(1, 2)` after the embedding.

    ## Example
    ```python
    model = nn.Sequential(nn.Embedding(100, 32), nn.Conv1d(16, 64, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(64, 4))  # (N, 16) tokens
    ```

    ## Use instead
    ```python
    class TextCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            self.conv = nn.Conv1d(32, 64, 3, padding=1)
            self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(64, 4))

        def forward(self, x):
            return self.head(self.conv(self.emb(x).transpose(1, 2)))  # (N, E, T)
    model = TextCNN()
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.modules("Conv1d", "LazyConv1d"):
        found = _features_last_input(g, n)
        if found is None:
            continue
        shp, src = found
        yield Hit(f"Conv1d '{n.target}' reads the (N, T, F) = {tuple(shp)} output of {src[0].type} '{src[0].target}' "
                  f"as (N, C, L): it takes the {shp[1]} time steps as channels and slides over the {shp[2]} features",
                  location=n.target, evidence={"input_shape": shp, "source": src[0].target,
                                               "in_channels": n.attrs.get("in_channels")},
                  fix=f"transpose to (N, F, T) before the convolution (x.transpose(1, 2)) and use "
                      f"Conv1d({shp[2]}, ...)")
