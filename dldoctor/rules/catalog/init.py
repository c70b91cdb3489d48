"""Initialization and weights: what the parameter tensors themselves show.

A freshly built model has random weights, so these rules look for patterns a healthy
initialisation or a healthy checkpoint never shows: constant or all-zero weight
matrices, NaN/Inf, huge values, dead or duplicated output channels, a scale that does
not match the layer's fan-in, Xavier scaling in front of ReLU. Biases and normalization
weights (legitimately 0 and 1) are left alone: only the weight matrices of linear,
convolution and recurrent layers are judged, except for NaN/Inf which is wrong anywhere.
Each rule reports one finding per model, at the worst tensor, with the others in evidence.
"""
from __future__ import annotations

import math
from typing import Iterator

from dldoctor.report.facts import Facts, Graph, Node, WeightStat
from dldoctor.rules.helpers.graph import NORMS, RELU, VALUE_PASS
from dldoctor.rules.helpers.weights import head_paths, is_constant, is_weight_matrix, row_len
from dldoctor.rules.options import InitOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import TRAINING_TIPS, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   TRAINING_TIPS: weight initialization: not all-zero/equal, not too small/large; Xavier vs He
#   TRANSFORMERS: exploding gradients; compression: pruning removes connections

# Consumers that make an all-zero layer a deliberate "starts as identity / no-op" branch
# (zero-init residual ends, LoRA's B, adaLN-Zero modulation).
RESIDUAL_JOIN = frozenset({"add", "add_", "sub", "mul", "mul_", "addcmul", "chunk", "split", "split_with_sizes",
                           "unbind", "cat"})
# Layers and ops through which a signal's scale passes unchanged (positive homogeneity: ReLUs, pooling, mean).
HOMOGENEOUS = RELU | {
    "LeakyReLU", "leaky_relu", "leaky_relu_", "PReLU",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "_adaptive_avg_pool2d", "mean",
}
MAX_LISTED = 10


def module_nodes(graph: Graph | None) -> dict[str, Node]:
    out: dict[str, Node] = {}
    if graph is not None:
        for n in graph.modules():
            out.setdefault(n.target, n)
    return out


def consumers(graph: Graph, n: Node, through: frozenset[str] = VALUE_PASS) -> list[Node]:
    return graph.skip(graph.succ(n), tuple(through))


def _listing(items: list[tuple[str, object]]) -> dict[str, object]:
    return dict(items[:MAX_LISTED])


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# -- rules ---------------------------------------------------------------------------------------


@rule(code="INI001", name="constant-weights", family="init", severity=Severity.ERROR,
      needs=("weights",), source=TRAINING_TIPS)
def constant_weights(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags hidden linear, convolution and recurrent layers whose weight matrix holds a single value
    everywhere: all zeros (zero initialisation) or one constant.

    ## Why is this bad?
    Units that start with identical weights compute the same thing and receive the same update,
    so they stay identical: the layer behaves like a single unit however wide it is. All-zero
    weights in front of a ReLU are worse: the output is zero and no gradient reaches the weights,
    so the layer never trains. In a checkpoint, a constant matrix means the layer never learned
    (or its weights were never loaded). Left alone, on purpose: the output layer (zero-initialising
    a classifier is harmless, as ViT does), and an all-zero layer whose output is added to a
    residual stream or used as a modulation (zero-init residual branches, LoRA's B matrix).

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.zeros_(model[0].weight)
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")  # random, asymmetric
    ```

    ## Options
    None.
    """
    heads = head_paths(facts)
    nodes = module_nodes(facts.graph)
    found: list[tuple[str, object]] = []
    first: WeightStat | None = None
    for w in facts.weights or []:
        if not is_weight_matrix(w) or not is_constant(w) or w.shape[0] < 2 or w.module in heads:
            continue
        n = nodes.get(w.module)
        if w.abs_max == 0 and n is not None and facts.graph is not None:
            if any(c.type in RESIDUAL_JOIN for c in consumers(facts.graph, n)):
                continue
        found.append((w.name, 0.0 if w.abs_max == 0 else w.mean))
        first = first or w
    if first is None:
        return
    value = "zero" if first.abs_max == 0 else f"the constant {_fmt(first.mean)}"
    more = f" (and {len(found) - 1} more weight matrices)" if len(found) > 1 else ""
    yield Hit(f"every weight of {first.name} {list(first.shape)} is {value}{more}: its units are "
              "identical and cannot learn different features",
              location=first.name, evidence={"tensors": len(found), "values": _listing(found), "shape": first.shape},
              fix="initialise with random values (kaiming_normal_ before ReLU, xavier_uniform_ before tanh), "
                  "or check that the checkpoint's weights were actually loaded")


@rule(code="INI002", name="non-finite-weights", family="init", severity=Severity.ERROR,
      needs=("weights",), source=(TRAINING_TIPS, TRANSFORMERS))
def non_finite_weights(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags parameters that contain NaN or infinite values.

    ## Why is this bad?
    One NaN in a weight turns every output that depends on it into NaN, and every gradient after
    it. A checkpoint with NaN or Inf weights comes from a run that diverged (exploding gradients,
    a learning rate too high, an fp16 overflow, a log of zero); it cannot be used as is.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    model[2].weight.data[0, 0] = float("nan")  # what a diverged run leaves behind
    ```

    ## Use instead
    ```python
    # restore the last finite checkpoint and retrain with gradient clipping and a lower learning rate
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    ```

    ## Options
    None.
    """
    bad = [w for w in facts.weights or [] if w.nan or w.inf]
    if not bad:
        return
    worst = max(bad, key=lambda w: w.nan + w.inf)
    nan, inf = sum(w.nan for w in bad), sum(w.inf for w in bad)
    yield Hit(f"{len(bad)} parameter tensor(s) hold non-finite values ({nan} NaN, {inf} Inf), e.g. {worst.name}",
              location=worst.name,
              evidence={"tensors": len(bad), "nan": nan, "inf": inf,
                        "per_tensor": _listing([(w.name, w.nan + w.inf) for w in bad])},
              fix="go back to the last finite checkpoint; retrain with gradient clipping, a lower learning rate, "
                  "and loss scaling (or bf16) if training in fp16")


@rule(code="INI003", name="exploding-weights", family="init", severity=Severity.WARNING,
      needs=("weights",), source=(TRAINING_TIPS, TRANSFORMERS))
def exploding_weights(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags parameters whose largest magnitude exceeds `init.max-abs-weight`.

    ## Why is this bad?
    Healthy weights, whether freshly initialised or trained, are small numbers, rarely beyond a few
    units. Magnitudes in the hundreds mean an exploding-gradient episode, a training run on the
    edge of divergence, or a bad manual initialisation: activations grow layer after layer,
    saturate or overflow (fp16's largest value is 65504), and quantization loses all resolution on
    the ordinary weights.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    model[0].weight.data[3, 7] = 5000.0
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    # and in training: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), weight decay
    ```

    ## Options
    - `init.max-abs-weight`: largest |weight| considered healthy (default 100.0)
    """
    bad = [w for w in facts.weights or [] if w.numel > 1 and w.abs_max > opts.max_abs_weight]
    if not bad:
        return
    worst = max(bad, key=lambda w: w.abs_max)
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    yield Hit(f"{worst.name} holds a weight of magnitude {_fmt(worst.abs_max)} (std {_fmt(worst.std)}){more}, "
              f"far beyond the {_fmt(opts.max_abs_weight)} healthy weights stay under",
              location=worst.name,
              evidence={"abs_max": worst.abs_max, "std": worst.std, "norm": worst.norm, "limit": opts.max_abs_weight,
                        "tensors": len(bad), "per_tensor": _listing([(w.name, w.abs_max) for w in bad])},
              fix="clip gradients and add weight decay when training; re-initialise layers set by hand")


@rule(code="INI004", name="dead-filters", family="init", severity=Severity.WARNING,
      needs=("weights",), source=(TRAINING_TIPS, TRANSFORMERS))
def dead_filters(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags linear and convolution layers in which some (not all) output channels have all-zero
    weights.

    ## Why is this bad?
    A filter whose weights are all zero outputs its bias everywhere: it detects nothing, still
    costs its full share of compute and memory, and (behind a ReLU, without a bias) passes no
    gradient, so it will not come back. Such channels come from pruning that zeroed channels
    without removing them, from a bad partial initialisation, or from weight decay on units that
    died during training. Removing them makes the layer genuinely smaller and faster.

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    model[0].weight.data[:8] = 0  # 8 of 32 filters dead
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Conv2d(3, 24, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))  # dead ones removed
    # or: dldoctor compress -t prune-50 (removes the weakest half of the channels)
    ```

    ## Options
    None.
    """
    bad = [w for w in facts.weights or []
           if is_weight_matrix(w) and w.module_type not in ("MultiheadAttention",) and 0 < w.dead_rows < w.shape[0]]
    if not bad:
        return
    worst = max(bad, key=lambda w: w.dead_rows / w.shape[0])
    total = sum(w.dead_rows for w in bad)
    more = f"; {total} dead channels in {len(bad)} layers" if len(bad) > 1 else ""
    yield Hit(f"{worst.dead_rows} of {worst.shape[0]} output channels of {worst.module} have all-zero weights{more}",
              location=worst.module,
              evidence={"dead": worst.dead_rows, "channels": worst.shape[0], "total_dead": total,
                        "per_layer": _listing([(w.module, w.dead_rows) for w in bad])},
              fix="remove the dead channels (and the matching inputs of the next layer), or re-initialise them",
              transform="prune-50")


@rule(code="INI005", name="duplicate-filters", family="init", severity=Severity.WARNING,
      needs=("weights",), source=TRAINING_TIPS)
def duplicate_filters(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags linear and convolution layers with output channels whose weights are exact copies of
    another channel's (all-zero channels are left to `dead-filters`).

    ## Why is this bad?
    Two units with the same incoming weights compute the same feature. If their outgoing weights
    are equal too they also receive the same updates forever: the symmetry is never broken and the
    copy is wasted capacity. Exact copies do not arise from random initialisation or training;
    they come from initialising by copying rows or tiling a tensor, or from a layer widened by
    duplication.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    model[0].weight.data[32:] = model[0].weight.data[:32]  # second half copies the first
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))  # independent random rows
    ```

    ## Options
    None.
    """
    bad = []
    for w in facts.weights or []:
        if not is_weight_matrix(w) or is_constant(w) or row_len(w) < 4:
            continue
        dups = w.duplicate_rows - max(w.dead_rows - 1, 0)
        if dups > 0:
            bad.append((w, dups))
    if not bad:
        return
    worst, dups = max(bad, key=lambda t: t[1] / t[0].shape[0])
    more = f" ({len(bad)} layers in all)" if len(bad) > 1 else ""
    yield Hit(f"{dups} of {worst.shape[0]} output channels of {worst.module} duplicate another channel exactly{more}",
              location=worst.module,
              evidence={"duplicates": dups, "channels": worst.shape[0],
                        "per_layer": _listing([(w.module, d) for w, d in bad])},
              fix="initialise every channel independently at random (no copying or tiling of rows)")


def _looks_fresh(w: WeightStat) -> bool:
    """Zero-mean, and a max/std ratio typical of a uniform (sqrt 3) or normal draw: an untrained init."""
    if w.std <= 0 or abs(w.mean) > 0.2 * w.std:
        return False
    r = w.abs_max / w.std
    return 1.6 <= r <= 1.8 or 2.5 <= r <= 6.5


@rule(code="INI006", name="xavier-init-before-relu", family="init", severity=Severity.WARNING,
      needs=("weights", "graph"), source=TRAINING_TIPS)
def xavier_before_relu(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags freshly initialised linear and convolution layers that feed a ReLU directly (no
    normalization between) and whose weight scale matches Xavier/Glorot initialisation,
    std = sqrt(2 / (fan_in + fan_out)), rather than He's sqrt(2 / fan_in). A layer only counts when
    the match is unambiguous: its scale must differ from He (fan-in or fan-out mode) and from
    PyTorch's default (std = 1 / sqrt(3 fan_in)), and the values must look like an untrained draw.

    ## Why is this bad?
    Xavier scaling keeps the variance of activations constant for symmetric activations such as
    tanh. A ReLU zeroes half of its inputs, so behind Xavier-scaled layers the signal's variance
    roughly halves at every layer: in a deep stack without normalization the activations and
    gradients shrink geometrically and training starts slowly or not at all. He initialisation
    doubles the variance to compensate, which is why it is advised for ReLU networks.

    ## Example
    ```python
    layers = []
    for _ in range(6):
        lin = nn.Linear(256, 256); nn.init.xavier_normal_(lin.weight); layers += [lin, nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(256, 10))
    ```

    ## Use instead
    ```python
    layers = []
    for _ in range(6):
        lin = nn.Linear(256, 256); nn.init.kaiming_normal_(lin.weight, nonlinearity="relu"); layers += [lin, nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(256, 10))
    ```

    ## Options
    - `init.xavier-tolerance`: relative distance from the Xavier std that counts as a match (default 0.1)
    - `init.xavier-relu-min-layers`: layers that must match before the rule fires (default 2)
    - `init.min-stat-numel`: smallest weight tensor whose std is trusted (default 256)
    """
    g = facts.graph
    nodes = module_nodes(g)
    tol = opts.xavier_tolerance
    found: list[tuple[WeightStat, float]] = []
    for w in facts.weights or []:
        if not is_weight_matrix(w) or w.numel < opts.min_stat_numel or not w.fan_in or not w.fan_out:
            continue
        if w.module_type not in ("Linear", "Conv1d", "Conv2d", "Conv3d") or not _looks_fresh(w):
            continue
        n = nodes.get(w.module)
        if n is None or not any(c.type in RELU for c in consumers(g, n)):
            continue
        xavier = math.sqrt(2.0 / (w.fan_in + w.fan_out))
        if abs(w.std / xavier - 1) > tol:
            continue
        others = (math.sqrt(2.0 / w.fan_in), math.sqrt(2.0 / w.fan_out), 1 / math.sqrt(3.0 * w.fan_in), 0.02, 0.01)
        if any(abs(xavier / o - 1) < 2 * tol for o in others):
            continue  # ambiguous: this std is also what another common init gives
        found.append((w, w.std * math.sqrt(w.fan_in / 2.0)))
    if len(found) < opts.xavier_relu_min_layers:
        return
    first = found[0][0]
    shrink = 1.0
    for _, r in found:
        shrink *= r * r
    yield Hit(f"{len(found)} layers feeding ReLU are Xavier-scaled (e.g. {first.module}: std {_fmt(first.std)}, "
              f"He would give {_fmt(math.sqrt(2.0 / first.fan_in))}); the activation variance shrinks about "
              f"{_fmt(1 / shrink)}x across them",
              location=first.module,
              evidence={"layers": len(found), "variance_factor": shrink,
                        "std_over_he": _listing([(w.module, round(r, 3)) for w, r in found])},
              fix='use nn.init.kaiming_normal_(w, nonlinearity="relu") (He) for layers followed by ReLU')


@rule(code="INI007", name="weight-scale-off", family="init", severity=Severity.WARNING,
      needs=("weights", "graph"), source=TRAINING_TIPS)
def weight_scale_off(facts: Facts, opts: InitOptions) -> Iterator[Hit]:
    """## What it does
    Flags hidden linear and convolution layers, with no normalization after them, whose weight
    standard deviation is far from the scale their fan-in calls for: below
    `init.min-scale` / sqrt(fan_in) or above `init.max-scale` / sqrt(fan_in), and just as far from
    the fan-out scale (He's fan-out mode is a legitimate choice). Layers followed by a
    normalization (which cancels the scale), the output layer, and small layers that end a residual
    branch (deliberately scaled down, as in GPT-2 or Fixup) are left alone.

    ## Why is this bad?
    Every standard initialisation (LeCun, Xavier, He, PyTorch's default) sets the std within a small
    factor of 1 / sqrt(fan_in) (1 / sqrt(fan_out) in fan-out mode), so that a layer neither shrinks
    nor amplifies its input. Weights ten times smaller make the signal fade layer by layer until
    gradients vanish; ten times larger make it blow up or saturate the activations. Typical causes:
    `normal_(0, 1)` or `uniform_(-1, 1)` regardless of width, or a hand-picked tiny std on a wide
    layer.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    for m in model[:4]:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0)  # 16x too large for fan_in 256
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    for m in model[:4]:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # std sqrt(2/256)
    ```

    ## Options
    - `init.min-scale`: smallest std x sqrt(fan_in) considered healthy (default 0.1)
    - `init.max-scale`: largest std x sqrt(fan_in) considered healthy (default 10.0)
    - `init.min-stat-numel`: smallest weight tensor whose std is trusted (default 256)
    - `init.max-abs-weight`: tensors beyond it are left to `exploding-weights` (default 100.0)
    """
    g = facts.graph
    nodes = module_nodes(g)
    heads = head_paths(facts)
    small: list[tuple[WeightStat, float]] = []
    large: list[tuple[WeightStat, float]] = []
    for w in facts.weights or []:
        if (not is_weight_matrix(w) or w.numel < opts.min_stat_numel or not w.fan_in or w.std <= 0
                or w.nan or w.inf or w.abs_max > opts.max_abs_weight or w.module in heads):
            continue
        if w.module_type not in ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                                 "ConvTranspose3d", "Bilinear"):
            continue
        n = nodes.get(w.module)
        if n is None:
            continue
        after = consumers(g, n, VALUE_PASS | HOMOGENEOUS)
        if any(c.type in NORMS for c in after):
            continue
        scale = w.std * math.sqrt(w.fan_in)
        # He's fan-out mode (torchvision's ResNet, RegNet) scales by the fan-out instead: judge the
        # layer off only when it is off by both measures.
        scale_out = w.std * math.sqrt(w.fan_out or w.fan_in)
        if scale > opts.max_scale and scale_out > opts.max_scale:
            large.append((w, scale))
        elif (scale < opts.min_scale and scale_out < opts.min_scale
              and not any(c.type in RESIDUAL_JOIN for c in consumers(g, n))):
            small.append((w, scale))
    for found, word, fix in (
        (large, "large", "initialise with kaiming_normal_ (ReLU) or xavier_uniform_ (tanh/sigmoid) instead of a fixed std"),
        (small, "small", "initialise with kaiming_normal_ (ReLU) or xavier_uniform_ (tanh/sigmoid); "
                         "a fixed tiny std does not scale with the layer's width"),
    ):
        if not found:
            continue
        worst, scale = max(found, key=lambda t: abs(math.log(t[1])))
        more = f" ({len(found)} layers in all)" if len(found) > 1 else ""
        yield Hit(f"{worst.module} weights have std {_fmt(worst.std)} for fan-in {worst.fan_in}: "
                  f"{_fmt(scale)}x the 1/sqrt(fan_in) scale, too {word} to keep the signal's size{more}",
                  location=worst.module,
                  evidence={"std": worst.std, "fan_in": worst.fan_in, "scale": scale,
                            "limits": [opts.min_scale, opts.max_scale],
                            "per_layer": _listing([(w.module, round(s, 4)) for w, s in found])},
                  fix=fix)
