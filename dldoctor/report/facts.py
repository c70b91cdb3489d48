"""The facts rules judge. Collectors fill them; rules only read them.

A fact that was not collected stays None, and a rule that `needs` it is reported
as skipped with the reason, never silently passed. Nothing here imports torch:
rules are pure functions of plain data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from dldoctor.errors import InputSpecError
from dldoctor.report.types import Report

# Names a rule may list in `needs`.
FACT_NAMES = ("report", "graph", "head", "weights", "loss", "training", "onnx", "probe", "profile", "baseline")

# Why a fact is missing, one table for the collector and the engine: the collector (collect/facts.py)
# writes one of these into `Facts.missing`, or a more specific reason when it knows one (the forward
# pass failed, a state_dict holds no module, ...); the engine names it when it skips a rule.
MISSING_REASONS = {
    "graph": "no traced graph (no architecture or no example input)",
    "head": "no traced graph (no architecture or no example input)",
    "weights": "no weights to look at",
    "loss": "the loss is unknown: pass --loss (ce, bce, bce_logits, nll, mse, l1, ...)",
    "training": "no training information (no module)",
    "onnx": "not an ONNX model",
    "probe": "no training probe was run (dldoctor probe)",
    "profile": "no profile was run (dldoctor profile, or dldoctor check --profile)",
    "baseline": "no baseline report was given: set `budget.baseline-report` to a JSON report saved with "
                "`dldoctor inspect MODEL -f json -o baseline.json`",
}


@dataclass
class Node:
    """One step of the traced forward pass: a leaf-module call, or a functional op called outside any leaf module.

    `inputs` are ids of the nodes that produced this node's tensor inputs (-1 = a model input);
    a node fed only by parameters or constants has none.
    """

    id: int
    kind: str  # "module" | "op" | "input" | "output"
    target: str  # module path ("layer1.0.conv1") or op name ("aten.relu", "aten.add")
    type: str  # module class ("Conv2d") or op name without overload ("relu", "add", "softmax")
    inputs: list[int] = field(default_factory=list)
    output_shape: list[int] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # module config or op arguments (see collect/graph.py)
    parent: str | None = None  # path of the innermost non-leaf module it ran inside ("" = the model itself)


def walk(start: list[Node], step: Any, through: Any) -> list[Node]:
    """Breadth-first from `start`, stepping (`step(node)`: successors or predecessors) through every node
    `through(node)` accepts; returns the first nodes it does not accept, each once."""
    out: list[Node] = []
    seen: set[int] = set()
    todo = list(start)
    while todo:
        m = todo.pop(0)
        if m.id in seen:
            continue
        seen.add(m.id)
        if through(m):
            todo.extend(step(m))
        else:
            out.append(m)
    return out


HIDDEN_OUTPUTS = frozenset({
    "last_hidden_state", "pooler_output", "hidden_states", "attentions", "past_key_values", "cross_attentions",
    "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions", "decoder_hidden_states",
    "decoder_attentions", "image_embeds", "text_embeds", "loss", "aux_loss", "router_logits", "mems"})


@dataclass
class Graph:
    """The traced forward pass as a dataflow graph (see collect/graph.py for what attrs hold).

    `containers` maps every non-leaf module path ("" = the model) to {"type": class name,
    "attrs": plain attributes}, e.g. a TransformerEncoderLayer's `norm_first`.
    """

    nodes: list[Node] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)  # ids of nodes producing the model's outputs
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # node id -> the name the model returns it under (a dict or a transformers ModelOutput); empty for tensors/tuples
    output_names: dict[int, str] = field(default_factory=dict)

    head_name: str | None = None  # the output to judge, by name (--head / [tool.dldoctor.output] head); None: auto

    def head(self) -> tuple[list[int], str | None]:
        """The outputs judged as the model's head (its logits), and why there is none when there is none.

        A model returning tensors or tuples: every output. One returning named outputs (a ModelOutput): those whose
        name ends in `logits` (not MoE `router_logits`); else every output that is not a hidden state, a pooler
        output, a cache, attentions or a loss; when nothing is left, the model is a base encoder/decoder without a
        head (BertModel's tanh pooler is not a classifier) and the output rules have nothing to judge."""
        if self.head_name is not None:
            chosen = [i for i, k in self.output_names.items() if k == self.head_name]
            if chosen:
                return chosen, None
            names = ", ".join(dict.fromkeys(self.output_names.values())) or "unnamed outputs"
            return [], f"no output named {self.head_name!r} to judge as the head (the model returns {names})"
        if not self.output_names:
            return list(self.outputs), None
        logits = [i for i, k in self.output_names.items() if k.endswith("logits") and k != "router_logits"]
        if logits:
            return logits, None
        rest = [i for i, k in self.output_names.items() if k not in HIDDEN_OUTPUTS]
        if rest:
            return rest, None
        names = ", ".join(dict.fromkeys(self.output_names.values()))
        return [], (f"the model has no head: it returns {names} (hidden states of a base model), nothing to judge "
                    "as logits; check the model with its task head (e.g. ...ForSequenceClassification)")

    def __post_init__(self) -> None:
        self._succ: dict[int, list[int]] | None = None

    def node(self, i: int) -> Node:
        return self.nodes[i]

    def succ(self, n: Node | int) -> list[Node]:
        if self._succ is None:
            self._succ = {}
            for x in self.nodes:
                for i in x.inputs:
                    self._succ.setdefault(i, []).append(x.id)
        i = n if isinstance(n, int) else n.id
        return [self.nodes[j] for j in self._succ.get(i, [])]

    def pred(self, n: Node) -> list[Node]:
        return [self.nodes[i] for i in n.inputs if i >= 0]

    def skip(self, nodes: list[Node], types: tuple[str, ...]) -> list[Node]:
        """Follow successors through nodes whose type is in `types` (views, dropout, identity...)."""
        return walk(nodes, self.succ, lambda n: n.type in types)

    def modules(self, *types: str) -> Iterator[Node]:
        for n in self.nodes:
            if n.kind == "module" and (not types or n.type in types):
                yield n

    def ops(self, *names: str) -> Iterator[Node]:
        for n in self.nodes:
            if n.kind == "op" and (not names or n.type in names):
                yield n


@dataclass
class WeightStat:
    """Statistics of one parameter tensor, from real weights (unavailable on the meta device)."""

    name: str  # "layer1.0.conv1.weight"
    module: str  # "layer1.0.conv1"
    module_type: str  # "Conv2d"
    shape: list[int]
    dtype: str
    numel: int
    requires_grad: bool
    nan: int = 0
    inf: int = 0
    zeros: int = 0  # exactly zero
    near_zero: int = 0  # |w| < near_zero_threshold * max|w| (see collect/weights.py)
    mean: float = 0.0
    std: float = 0.0
    abs_max: float = 0.0
    norm: float = 0.0
    dead_rows: int = 0  # output channels / rows that are all zero (weights of 2-D+ tensors)
    duplicate_rows: int = 0  # output channels equal to an earlier one (weights of 2-D+ tensors)
    fan_in: int | None = None
    fan_out: int | None = None


@dataclass
class TrainingInfo:
    """What a checkpoint or the loaded model says about training: frozen layers, optimizer, epoch."""

    frozen: list[str] = field(default_factory=list)  # parameter names with requires_grad False
    trainable: list[str] = field(default_factory=list)
    epoch: int | None = None
    optimizer: str | None = None
    dataset_size: int | None = None  # from --dataset-size when the user gives it


@dataclass
class Facts:
    report: Report
    graph: Graph | None = None
    weights: list[WeightStat] | None = None
    loss: str | None = None  # "ce", "bce", "bce_logits", "nll", "mse", "l1", ... from --loss
    training: TrainingInfo | None = None
    onnx: dict[str, Any] | None = None
    probe: Any = None  # a ProbeResult, from `dldoctor probe` / dldoctor.watch (dldoctor/report/probe_types.py)
    profile: Any = None  # a ProfileResult, from `dldoctor profile` or `check --profile` (dldoctor/report/profile_types.py)
    baseline: Report | None = None  # the saved report that relative budgets compare against (budget.baseline-report)
    missing: dict[str, str] = field(default_factory=dict)  # fact name -> why it is missing

    def has(self, name: str) -> bool:
        if name == "report":
            return True
        if name == "head":  # the outputs the output rules judge: see Graph.head
            return self.graph is not None and self.graph.head()[1] is None
        return getattr(self, name, None) is not None

    def why_missing(self, name: str) -> str:
        """Why fact `name` is missing: the collector's own words, else MISSING_REASONS' (facts built by hand)."""
        if name == "head" and self.graph is not None:
            return self.graph.head()[1] or "not collected"
        return self.missing.get(name) or MISSING_REASONS.get(name, "not collected")


# -- loss names --------------------------------------------------------------------------------

LOSSES = {
    "ce": "ce", "cross_entropy": "ce", "crossentropy": "ce", "crossentropyloss": "ce",
    "nll": "nll", "nllloss": "nll",
    "bce": "bce", "bceloss": "bce",
    "bce_logits": "bce_logits", "bcewithlogits": "bce_logits", "bcewithlogitsloss": "bce_logits",
    "mse": "mse", "mseloss": "mse", "l2": "mse",
    "l1": "l1", "l1loss": "l1", "mae": "l1",
    "huber": "huber", "smooth_l1": "huber", "huberloss": "huber",
    "kl": "kl", "kldiv": "kl", "kldivloss": "kl",
    # cross-entropy over a B x B similarity of every sample with every other, the diagonal the targets (CLIP)
    "contrastive": "contrastive", "infonce": "contrastive", "clip": "contrastive",
}


def normalise_loss(name: str | None) -> str | None:
    """The loss names dldoctor knows (--loss ce, CrossEntropyLoss, ...) -> one canonical name."""
    if name is None:
        return None
    key = name.strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise InputSpecError(f"unknown loss {name!r}", f"use one of: {', '.join(sorted(set(LOSSES.values())))}")
    return LOSSES[key]
