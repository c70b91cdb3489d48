"""Output layer and loss: does what the model emits match what the loss expects?

PyTorch's classification losses differ from the Keras recipes in the seeds: `nn.CrossEntropyLoss`
and `nn.BCEWithLogitsLoss` take raw scores (logits) and apply the softmax / sigmoid themselves,
`nn.NLLLoss` and `nn.KLDivLoss` take log-probabilities, and only `nn.BCELoss` takes probabilities.
These rules read what the traced forward pass ends with (through views, dropout and other
shape-only steps: `source` and `VALUE_PASS` in dldoctor/rules/helpers/graph.py, shared with the
init and transfer families) and compare it with the loss named by `--loss`.
"""
from __future__ import annotations

from typing import Iterator

from dldoctor.report.facts import Facts, Graph, Node
from dldoctor.rules.helpers.graph import (
    HARD_BOUNDED,
    HARDSIGMOID,
    HEAD_ACTIVATIONS,
    LOG_SOFTMAX,
    RELU,
    SIGMOID,
    SOFTMAX,
    TANH,
    output_sources,
)
from dldoctor.rules.options import OutputOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import CHOLLET, HANDBOOK
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   CHOLLET: last-layer / loss recipes for regression, binary and multiclass
#   HANDBOOK: unit-test custom layers and losses; loss functions per task

# -- what the output ends with -------------------------------------------------------------------

LOG_PROBS = LOG_SOFTMAX | {"log", "log_", "LogSigmoid", "log_sigmoid_forward", "log_sigmoid"}
# Outputs in [0, 1] that BCELoss accepts.
PROBABILITIES = SOFTMAX | SIGMOID | HARDSIGMOID | {"clamp", "clamp_"}
# Activations that confine a regression output to a range.
CLAMPING = RELU | SIGMOID | TANH | HARD_BOUNDED | SOFTMAX


def ends_with(graph: Graph, kinds: frozenset[str]) -> tuple[Node, Node] | None:
    """The (output, source) pair whose source is one of `kinds`, when every output that could carry the
    same values raw is also activated: a model returning both logits and probabilities is left alone."""
    pairs = output_sources(graph)
    hit = next(((o, s) for o, s in pairs if s.type in kinds), None)
    if hit is None:
        return None
    raw = [s for o, s in pairs
           if s.type not in HEAD_ACTIVATIONS and s.kind != "input" and o.output_shape == hit[0].output_shape]
    return None if raw else hit


def softmax_dim(n: Node) -> int | None:
    """The dimension a softmax / log-softmax node normalises over, made non-negative."""
    rank = len(n.output_shape or [])
    if n.kind == "module":
        d = n.attrs.get("dim")
        if n.type == "Softmax2d":
            d = -3
        if d is None:  # nn.Softmax(dim=None): PyTorch's legacy implicit choice
            d = 0 if rank in (0, 1, 3) else 1
    else:
        args = n.attrs.get("args") or []
        d = args[0] if args and isinstance(args[0], int) and not isinstance(args[0], bool) else None
    if d is None or not rank:
        return d
    return d % rank


def _loc(n: Node) -> str:
    return n.target if n.kind == "module" else f"{n.target} (in {n.parent or 'the model'})"


def _kind(n: Node) -> str:
    return n.type if n.kind == "module" else n.target


LOSS_NAMES = {
    "ce": "CrossEntropyLoss", "nll": "NLLLoss", "bce": "BCELoss", "bce_logits": "BCEWithLogitsLoss",
    "mse": "MSELoss", "l1": "L1Loss", "huber": "HuberLoss", "kl": "KLDivLoss",
}


# -- rules ---------------------------------------------------------------------------------------


@rule(code="OUT001", name="softmax-before-logits-loss", family="output", severity=Severity.ERROR,
      needs=("graph", "loss", "head"), source=(CHOLLET, HANDBOOK))
def softmax_before_logits_loss(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags a model whose output already went through a softmax (or log-softmax) when the loss is
    `CrossEntropyLoss` or `BCEWithLogitsLoss`, which expect raw scores.

    ## Why is this bad?
    The Keras recipe puts the softmax in the last layer because Keras' categorical cross-entropy
    takes probabilities. PyTorch's `CrossEntropyLoss` applies log-softmax itself, so a softmax in
    the model is applied twice: the scores the loss sees are squeezed into [0, 1], the largest
    possible margin between classes is tiny, gradients shrink as the model gets confident, and
    training stalls at a high loss. `BCEWithLogitsLoss` on softmax or log-softmax outputs is wrong
    the same way. A log-softmax in front of `CrossEntropyLoss` is only redundant (log-softmax of
    log-probabilities changes nothing), so it is reported as info.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1))
    loss = nn.CrossEntropyLoss()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))  # logits
    loss = nn.CrossEntropyLoss()
    probs = model(x).softmax(dim=1)  # only when probabilities are needed, at inference
    ```

    ## Options
    None.
    """
    g = facts.graph
    if facts.loss not in ("ce", "bce_logits"):
        return
    hit = ends_with(g, SOFTMAX | LOG_SOFTMAX)
    if hit is None:
        return
    out, src = hit
    loss = LOSS_NAMES[facts.loss]
    if src.type in LOG_SOFTMAX and facts.loss == "ce":
        yield Hit(f"the output is already log-softmaxed ({_kind(src)}) and {loss} applies log-softmax again: "
                  "harmless but redundant",
                  location=_loc(src), evidence={"activation": src.type, "loss": facts.loss},
                  fix="drop the log-softmax from the model, or keep it and use NLLLoss",
                  severity=Severity.INFO)
        return
    yield Hit(f"the output goes through {_kind(src)} but {loss} expects raw logits and applies the "
              f"{'softmax' if facts.loss == 'ce' else 'sigmoid'} itself",
              location=_loc(src), evidence={"activation": src.type, "loss": facts.loss, "output_shape": out.output_shape},
              fix="remove the softmax from the model's forward and return the logits; apply softmax only "
                  "when probabilities are needed at inference")


@rule(code="OUT002", name="squashed-logits-into-logits-loss", family="output", severity=Severity.ERROR,
      needs=("graph", "loss", "head"), source=(CHOLLET, HANDBOOK))
def squashed_logits(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags a model whose output ends with a sigmoid or tanh (or a hard variant) when the loss is
    `BCEWithLogitsLoss` or `CrossEntropyLoss`, which expect unbounded logits. A ReLU at the end of a
    classifier is reported as a warning.

    ## Why is this bad?
    The seeds' binary-classification recipe ends with a sigmoid because Keras' binary cross-entropy
    takes probabilities. `BCEWithLogitsLoss` applies the sigmoid itself: fed sigmoid outputs, the
    logits it sees are confined to [0, 1], so the predicted probability can never leave
    [0.5, 0.73] and the loss cannot approach zero. A tanh confines them to [-1, 1] the same way.
    A final ReLU cannot emit negative logits, which throws away half the range and can leave
    classes stuck at zero.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    loss = nn.BCEWithLogitsLoss()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))  # logits
    loss = nn.BCEWithLogitsLoss()  # sigmoid + BCE, numerically stable
    ```

    ## Options
    None.
    """
    if facts.loss not in ("ce", "bce_logits"):
        return
    g = facts.graph
    hit = ends_with(g, SIGMOID | TANH | HARD_BOUNDED | RELU)
    if hit is None:
        return
    out, src = hit
    loss = LOSS_NAMES[facts.loss]
    relu = src.type in RELU
    yield Hit(f"the output goes through {_kind(src)}, so the logits {loss} sees are "
              f"{'never negative' if relu else 'confined to a narrow range'}; the loss expects unbounded logits",
              location=_loc(src), evidence={"activation": src.type, "loss": facts.loss, "output_shape": out.output_shape},
              fix="return the last linear layer's output unchanged; the loss applies the sigmoid/softmax",
              severity=Severity.WARNING if relu else None)


@rule(code="OUT003", name="bce-without-probabilities", family="output", severity=Severity.ERROR,
      needs=("graph", "loss", "head"), source=CHOLLET)
def bce_without_probabilities(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags `BCELoss` (plain binary cross-entropy) on a model whose output is not squashed into
    [0, 1] by a sigmoid (or softmax).

    ## Why is this bad?
    `BCELoss` takes probabilities: raw scores outside [0, 1] make it raise at run time, and scores
    that happen to fall inside are treated as probabilities they are not. The seeds' binary recipe
    pairs a one-unit sigmoid output with binary cross-entropy; in PyTorch the stable way to get
    exactly that is `BCEWithLogitsLoss` on the raw score.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))
    loss = nn.BCELoss()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))
    loss = nn.BCEWithLogitsLoss()  # or end the model with nn.Sigmoid() and keep BCELoss
    ```

    ## Options
    None.
    """
    if facts.loss != "bce":
        return
    g = facts.graph
    pairs = output_sources(g)
    if not pairs or any(s.type in PROBABILITIES for _, s in pairs):
        return
    out, src = pairs[0]
    if src.kind == "input":
        return
    yield Hit(f"BCELoss needs probabilities in [0, 1], but the output comes straight from {_kind(src)} "
              "with no sigmoid",
              location=_loc(src), evidence={"last_step": src.type, "loss": facts.loss, "output_shape": out.output_shape},
              fix="use BCEWithLogitsLoss on the raw scores (stable), or end the model with a sigmoid")


@rule(code="OUT004", name="log-prob-loss-without-log-softmax", family="output", severity=Severity.ERROR,
      needs=("graph", "loss", "head"), source=(CHOLLET, HANDBOOK))
def log_prob_loss(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags `NLLLoss` or `KLDivLoss` on a model whose output is not a log-softmax (raw scores, or a
    plain softmax).

    ## Why is this bad?
    Both losses take log-probabilities and do no normalisation of their own. `NLLLoss` on raw
    scores just returns minus the target's score, which the model can push to minus infinity
    without learning anything; on softmax outputs it maximises a probability linearly instead of
    its logarithm, which barely trains. `KLDivLoss` on anything but log-probabilities computes
    a quantity that is not a divergence.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    loss = nn.NLLLoss()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10), nn.LogSoftmax(dim=1))
    loss = nn.NLLLoss()  # or drop the LogSoftmax and use nn.CrossEntropyLoss()
    ```

    ## Options
    None.
    """
    if facts.loss not in ("nll", "kl"):
        return
    g = facts.graph
    pairs = output_sources(g)
    if not pairs or any(s.type in LOG_PROBS for _, s in pairs):
        return
    out, src = pairs[0]
    if src.kind == "input":
        return
    loss = LOSS_NAMES[facts.loss]
    what = f"probabilities from {_kind(src)}" if src.type in SOFTMAX | SIGMOID else f"raw scores from {_kind(src)}"
    yield Hit(f"{loss} expects log-probabilities, but the output is {what}",
              location=_loc(src), evidence={"last_step": src.type, "loss": facts.loss, "output_shape": out.output_shape},
              fix="end the model with LogSoftmax(dim=1) (or drop the softmax and use CrossEntropyLoss)")


@rule(code="OUT005", name="bounded-regression-output", family="output", severity=Severity.WARNING,
      needs=("graph", "loss", "head"), source=CHOLLET)
def bounded_regression_output(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags a regression model (loss MSE, L1 or Huber) whose output passes through an activation
    that confines it to a range: ReLU, sigmoid, tanh, their hard variants, or softmax.

    ## Why is this bad?
    The seeds' regression recipe ends with a linear unit and no activation, because the target can
    take any value. A ReLU at the end cannot predict negatives and stops passing gradient once a
    pre-activation goes negative (that output is stuck at zero); a sigmoid or tanh cannot reach
    targets outside its range and saturates near its ends, where gradients vanish. When the targets
    really are confined (pixel intensities in [0, 1]), scale them or accept the warning knowingly.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 1), nn.ReLU())
    loss = nn.MSELoss()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 1))  # linear output
    loss = nn.MSELoss()
    ```

    ## Options
    None.
    """
    if facts.loss not in ("mse", "l1", "huber"):
        return
    hit = ends_with(facts.graph, CLAMPING)
    if hit is None:
        return
    out, src = hit
    yield Hit(f"regression output ends with {_kind(src)}, which confines predictions to a range and "
              "saturates (or zeroes) the gradient at its limits",
              location=_loc(src), evidence={"activation": src.type, "loss": facts.loss, "output_shape": out.output_shape},
              fix="end a regression model with a linear layer and no activation (normalise the targets instead)")


@rule(code="OUT006", name="single-class-output", family="output", severity=Severity.ERROR,
      needs=("graph", "head"), source=CHOLLET)
def single_class_output(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags a softmax or log-softmax taken over a dimension of size 1, and a one-unit head trained
    with `CrossEntropyLoss` or `NLLLoss` (when the loss is known).

    ## Why is this bad?
    A softmax over one value is always 1 (log-softmax always 0), whatever the input: the output
    carries no information and the loss no gradient. For two classes the seeds' recipe is one unit
    with a sigmoid and binary cross-entropy, or N units with softmax and categorical
    cross-entropy, never one unit with a softmax.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1), nn.Softmax(dim=1))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1))
    loss = nn.BCEWithLogitsLoss()  # one unit: binary; or Linear(32, 2) with CrossEntropyLoss
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.nodes:
        if n.type not in SOFTMAX | LOG_SOFTMAX or not n.output_shape:
            continue
        d = softmax_dim(n)
        if d is None or d == 0 or d >= len(n.output_shape):  # dim 0 is OUT008's case
            continue
        if n.output_shape[d] == 1:
            yield Hit(f"{_kind(n)} over dimension {d}, which has size 1: the result is constant "
                      f"({'1' if n.type in SOFTMAX else '0'}) whatever the input",
                      location=_loc(n), evidence={"dim": d, "shape": n.output_shape},
                      fix="for two classes use one unit with a sigmoid / BCEWithLogitsLoss, or two units with softmax")
            return
    if facts.loss in ("ce", "nll"):
        for o, s in output_sources(g):
            shape = o.output_shape or []
            if len(shape) >= 2 and shape[1] == 1 and s.kind != "input":
                yield Hit(f"{LOSS_NAMES[facts.loss]} over a single output unit: with one class the loss is "
                          "always 0 and nothing is learned",
                          location=_loc(s), evidence={"classes": 1, "loss": facts.loss, "output_shape": shape},
                          fix="use BCEWithLogitsLoss for a one-unit binary head, or give the head one unit per class")
                return


@rule(code="OUT007", name="softmax-with-binary-loss", family="output", severity=Severity.WARNING,
      needs=("graph", "loss", "head"), source=CHOLLET)
def softmax_with_bce(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags a softmax output trained with `BCELoss`.

    ## Why is this bad?
    A softmax makes the classes compete: the outputs sum to 1, which fits single-label multiclass
    problems, whose seed recipe is softmax with categorical cross-entropy. Binary cross-entropy
    scores each output as an independent yes/no, which fits multi-label problems, whose outputs
    should each have their own sigmoid. Mixing the two trains towards targets the softmax cannot
    express (two labels both on) or double-counts the single label.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5), nn.Softmax(dim=1))
    loss = nn.BCELoss()
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
    loss = nn.CrossEntropyLoss()  # one label per sample; BCEWithLogitsLoss for multi-label
    ```

    ## Options
    None.
    """
    if facts.loss != "bce":
        return
    hit = ends_with(facts.graph, SOFTMAX)
    if hit is None:
        return
    out, src = hit
    d = softmax_dim(src)
    if d is not None and src.output_shape and d < len(src.output_shape) and src.output_shape[d] == 1:
        return  # OUT006
    yield Hit(f"softmax outputs (which compete and sum to 1) are scored with BCELoss (independent yes/no per output)",
              location=_loc(src), evidence={"activation": src.type, "loss": facts.loss, "output_shape": out.output_shape},
              fix="single label per sample: drop the softmax and use CrossEntropyLoss; several labels: "
                  "drop the softmax and use BCEWithLogitsLoss")


@rule(code="OUT008", name="softmax-over-batch", family="output", severity=Severity.ERROR,
      needs=("graph", "head"), source=(CHOLLET, HANDBOOK))
def softmax_over_batch(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Flags a softmax or log-softmax at the model output that normalises over dimension 0 of a
    batch-first tensor (explicitly, or through `nn.Softmax()`'s deprecated implicit choice).

    ## Why is this bad?
    Dimension 0 is the batch: each sample's "probabilities" then depend on the other samples in
    the batch and sum to 1 down the batch instead of across the classes. The loss still falls, so
    the bug is invisible in the training curve, and predictions change with batch composition
    (with a batch of one, every output is 1).

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=0))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1))
    ```

    ## Options
    None.
    """
    g = facts.graph
    inputs = [n for n in g.nodes if n.kind == "input" and n.output_shape]
    batch = inputs[0].output_shape[0] if inputs else None
    for _, s in output_sources(g):
        if s.type not in SOFTMAX | LOG_SOFTMAX or not s.output_shape or len(s.output_shape) < 2:
            continue
        if softmax_dim(s) != 0 or (batch is not None and s.output_shape[0] != batch):
            continue
        implicit = s.kind == "module" and s.attrs.get("dim") is None
        yield Hit(f"{_kind(s)} normalises over dimension 0, the batch{' (implicit dim)' if implicit else ''}: "
                  "each sample's output depends on the rest of the batch",
                  location=_loc(s), evidence={"dim": 0, "shape": s.output_shape, "implicit_dim": implicit},
                  fix="normalise over the class dimension: Softmax(dim=1) (or dim=-1)")
        return
