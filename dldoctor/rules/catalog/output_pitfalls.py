"""Output pitfalls from the field: a log taken of a softmax, and dropout applied to the predictions.

Both run without an error and need no --loss: the first loses precision (and gives -inf) where
`log_softmax` would not, the second randomly zeroes the model's own outputs while it trains.
"""
from __future__ import annotations

from typing import Iterator

from dldoctor.report.facts import Facts, Node, walk
from dldoctor.rules.helpers.graph import (
    DROPOUT_OPS,
    DROPOUTS,
    SHAPE_MODULES,
    SOFTMAX,
    VALUE_PASS,
    VIEW_OPS,
    base,
)
from dldoctor.rules.options import OutputOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import CHOLLET, HANDBOOK, TRAINING_TIPS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   CHOLLET: the last layer's activation and the loss go together; dropout belongs to hidden layers
#   HANDBOOK: losses (log-likelihood), debugging numerical problems
#   TRAINING_TIPS: dropout in hidden layers


def _loc(n: Node) -> str:
    return n.target if n.kind == "module" else f"{n.target} (in {n.parent or 'the model'})"


def _is_view(n: Node) -> bool:
    return (n.kind == "module" and n.type in SHAPE_MODULES) or (n.kind == "op" and base(n.type) in VIEW_OPS)


@rule(code="OUT009", name="log-of-softmax", family="output", severity=Severity.WARNING,
      needs=("graph",), source=(HANDBOOK, CHOLLET))
def log_of_softmax(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Finds a logarithm taken of a softmax (`torch.log(F.softmax(x, dim))`, `torch.log(nn.Softmax(dim)(x))`),
    possibly through views, instead of one `log_softmax`.

    ## Why is this bad?
    The softmax of a confident logit vector underflows to exactly 0 in float32 for the unlikely
    classes (and in float16 much sooner); the log of it is then -inf, and the loss and its
    gradient turn into inf and NaN. `log_softmax` computes the same values as `x - logsumexp(x)`,
    which stays finite, and is also cheaper. Where the log-probabilities feed `NLLLoss`,
    `CrossEntropyLoss` on the raw logits does both steps at once.

    ## Example
    ```python
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return torch.log(torch.softmax(self.fc(x), dim=1))
    model = Net()
    ```

    ## Use instead
    ```python
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return torch.log_softmax(self.fc(x), dim=1)
    model = Net()
    ```

    ## Options
    None.
    """
    g = facts.graph
    for n in g.ops():
        if base(n.type) not in ("log", "log2", "log10"):
            continue
        src = walk(g.pred(n), g.pred, _is_view)
        sm = next((m for m in src if m.type in SOFTMAX or base(m.type) in SOFTMAX), None)
        if sm is None:
            continue
        yield Hit(f"{n.target} is taken of the softmax at {_loc(sm)}: probabilities that underflow to 0 give -inf "
                  "and NaN gradients",
                  location=_loc(sm), evidence={"log": n.type, "softmax": sm.type},
                  fix="use log_softmax (torch.log_softmax / nn.LogSoftmax), or CrossEntropyLoss on the logits")


def _is_dropout(n: Node) -> bool:
    return (n.kind == "module" and n.type in DROPOUTS) or (n.kind == "op" and base(n.type) in DROPOUT_OPS)


@rule(code="OUT010", name="dropout-on-output", family="output", severity=Severity.WARNING,
      needs=("graph", "head"), source=(CHOLLET, TRAINING_TIPS))
def dropout_on_output(facts: Facts, opts: OutputOptions) -> Iterator[Hit]:
    """## What it does
    Finds a model output whose last value-changing step is a dropout: the predictions themselves
    go through `nn.Dropout` (a dropout appended after the final layer, or a head built as
    `Linear -> Dropout`). Only the outputs judged as the model's head (its logits) count: a base
    model's hidden states may end in dropout.

    ## Why is this bad?
    Dropout belongs to hidden layers, where the next layer learns to cope with the missing units.
    After the last layer it zeroes a share of the model's predictions at every training step (and
    scales up the rest), so the loss is computed on corrupted outputs that no weight can repair,
    and train and eval outputs differ in scale. It usually comes from a head written in the wrong
    order (`Linear, Dropout` instead of `Dropout, Linear`).

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10), nn.Dropout(0.5))
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))
    ```

    ## Options
    None.
    """
    g = facts.graph
    for i in g.head()[0]:  # the logits; a base model's hidden states (T5's encoder ends in dropout) are not judged
        n = g.node(i)
        seen = set()
        while n.id not in seen and (_is_view(n) or n.type in VALUE_PASS) and not _is_dropout(n) \
                and len(n.inputs) == 1 and n.inputs[0] >= 0:
            seen.add(n.id)
            n = g.node(n.inputs[0])
        if not _is_dropout(n) or (n.kind == "module" and not n.attrs.get("p")):
            continue
        yield Hit(f"the model output goes through {n.type} at {_loc(n)}: the predictions themselves are dropped "
                  "out during training",
                  location=_loc(n), evidence={"dropout": n.type, "p": n.attrs.get("p")},
                  fix="move the dropout before the last layer (Dropout, then Linear), or remove it")
