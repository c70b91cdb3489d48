"""Transfer learning: which layers train, which are frozen, and how much data there is.

The facts come from `requires_grad` on the loaded model's parameters (a pickled module or
a factory keeps it; a bare state_dict does not) and from `--dataset-size`. Layers are
ordered by when they run in the traced forward pass, so "early" and "late" mean what
they mean for features: generic edges and textures first, task-specific features last.
Adapter-style fine-tuning (LoRA, adapters, prompts), where small trainable modules sit
inside a frozen network, is recognised and left alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from dldoctor.report.units import si
from dldoctor.report.facts import Facts
from dldoctor.rules.helpers.graph import BATCHNORMS, EMBEDDINGS, source
from dldoctor.rules.helpers.weights import WEIGHT_MODULES, head_paths
from dldoctor.rules.options import TransferOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import CHOLLET, TRAINING_TIPS, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   CHOLLET: feature extraction vs fine-tuning; unfreeze the top, specific layers
#   TRAINING_TIPS: small/medium/large data: how much to freeze; leave the first layers alone
#   TRANSFORMERS: pretrained models and fine-tuning; task-specific adapters

LAYERS = WEIGHT_MODULES | EMBEDDINGS  # the layers whose frozen state counts
ADAPTER = re.compile(r"lora|adapter|prompt|prefix|ia3", re.I)


@dataclass
class Layer:
    path: str
    type: str
    params: int
    frozen: bool  # its weight (or first parameter) has requires_grad False


def layers(facts: Facts, types: frozenset[str] = LAYERS) -> list[Layer]:
    """Parametrised layers of the given types in forward order, with their frozen state."""
    t = facts.training
    state = {n: False for n in t.trainable}
    state.update({n: True for n in t.frozen})
    order: list[tuple[str, str]] = []
    seen = set()
    if facts.graph is not None:
        for n in facts.graph.modules():
            if n.target not in seen:
                seen.add(n.target)
                order.append((n.target, n.type))
    else:
        for lay in facts.report.layers:
            if lay.path not in seen:
                seen.add(lay.path)
                order.append((lay.path, lay.type))
    sizes = {lay.path: lay.params for lay in facts.report.layers}
    out = []
    for path, typ in order:
        if typ not in types:
            continue
        names = [n for n in state if n.startswith(path + ".")] if path else []
        if not names:
            continue
        main = next((n for n in names if n.rsplit(".", 1)[-1] in ("weight", "in_proj_weight", "weight_ih_l0")), names[0])
        out.append(Layer(path, typ, sizes.get(path, 0), state[main]))
    return out


def _share(ls: list[Layer], frozen: bool) -> float:
    total = sum(x.params for x in ls)
    return sum(x.params for x in ls if x.frozen == frozen) / total if total else 0.0


def _names(ls: list[Layer], k: int = 5) -> list[str]:
    return [x.path for x in ls[:k]]


@rule(code="TRF001", name="inverted-freezing", family="transfer", severity=Severity.WARNING,
      needs=("training",), source=(CHOLLET, TRAINING_TIPS))
def inverted_freezing(facts: Facts, opts: TransferOptions) -> Iterator[Hit]:
    """## What it does
    Flags a partly frozen model in which the early layers train while the later layers are
    frozen: most parameters of the first quarter of the layers are trainable and most parameters
    of the second half (the output layer aside) are frozen.

    ## Why is this bad?
    Fine-tuning goes the other way. Early layers learn generic features (edges, textures, common
    word pieces) that transfer across tasks and should be left alone, especially with little data;
    the later, task-specific layers are the ones to unfreeze. Training the early layers while
    freezing the later ones disturbs the features that transfer and keeps fixed the ones that do
    not, and an index slice such as `list(model.parameters())[-k:]` taken in the wrong direction
    produces exactly this.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for p in model[4].parameters():
        p.requires_grad = False  # the deep layer is frozen, the first ones train
    ```

    ## Use instead
    ```python
    for p in model[0].parameters():
        p.requires_grad = False  # freeze the generic first layers; fine-tune the top
    ```

    ## Options
    None.
    """
    if not facts.training.frozen or not facts.training.trainable:
        return
    ls = layers(facts)
    if len(ls) < 4:
        return
    n = len(ls)
    early, late = ls[: max(1, n // 4)], ls[n // 2: n - 1]
    if not late or _share(early, False) < 0.5 or _share(late, True) < 0.5:
        return
    if all(ADAPTER.search(x.path) for x in early if not x.frozen):
        return
    yield Hit(f"the first layers train ({', '.join(_names([x for x in early if not x.frozen], 3))}) while later "
              f"ones are frozen ({', '.join(_names([x for x in late if x.frozen], 3))}): the reverse of fine-tuning",
              location=next(x.path for x in early if not x.frozen),
              evidence={"early_trainable_share": round(_share(early, False), 4),
                        "late_frozen_share": round(_share(late, True), 4),
                        "trainable_early": _names([x for x in early if not x.frozen]),
                        "frozen_late": _names([x for x in late if x.frozen])},
              fix="freeze from the input side: keep the first layers frozen and unfreeze the last blocks and the head")


@rule(code="TRF002", name="frozen-classifier-head", family="transfer", severity=Severity.WARNING,
      needs=("training",), source=(CHOLLET, TRAINING_TIPS))
def frozen_head(facts: Facts, opts: TransferOptions) -> Iterator[Hit]:
    """## What it does
    Flags a model whose output layer is frozen while other layers (not adapters) train.

    ## Why is this bad?
    Whatever the amount of data, every transfer-learning recipe trains the new classifier on top:
    with little data it is the only part that trains (feature extraction); with more, the top of
    the backbone is unfrozen with it. A frozen head keeps the old task's classes (or a random
    projection) while the features under it change, so the backbone is forced to fit a fixed
    readout. This usually means the freezing loop also caught the freshly added head. Adapter
    methods (LoRA and similar), which often keep a language model's output layer frozen, are not
    flagged.

    ## Example
    ```python
    model = torchvision.models.resnet18(weights="DEFAULT")
    model.fc = nn.Linear(512, 5)
    for p in model.parameters():
        p.requires_grad = False  # also freezes the new head...
    for p in model.layer4.parameters():
        p.requires_grad = True   # ...while the last block trains
    ```

    ## Use instead
    ```python
    for p in model.parameters():
        p.requires_grad = False
    for p in [*model.layer4.parameters(), *model.fc.parameters()]:
        p.requires_grad = True
    ```

    ## Options
    None.
    """
    t = facts.training
    if not t.frozen or not t.trainable:
        return
    ls = layers(facts)
    heads = head_paths(facts) if facts.graph is not None else ({ls[-1].path} if ls else set())
    frozen_heads = [x for x in ls if x.path in heads and x.frozen]
    if not frozen_heads:
        return
    training = [x for x in ls if x.path not in heads and not x.frozen and not ADAPTER.search(x.path)]
    if not training:
        return
    h = frozen_heads[0]
    yield Hit(f"the output layer {h.path} is frozen while {len(training)} other layers train "
              f"(e.g. {', '.join(_names(training, 3))})",
              location=h.path,
              evidence={"head": h.path, "head_params": h.params, "trainable_layers": len(training),
                        "trainable_params": facts.report.params.trainable},
              fix=f"set requires_grad=True on {h.path}'s parameters (a new head must be trained)")


@rule(code="TRF003", name="small-data-full-finetune", family="transfer", severity=Severity.INFO,
      needs=("training",), source=(CHOLLET, TRAINING_TIPS, TRANSFORMERS))
def small_data_full_finetune(facts: Facts, opts: TransferOptions) -> Iterator[Hit]:
    """## What it does
    Reports a model trained end to end (nothing frozen) on a dataset, given with
    `--dataset-size`, smaller than `transfer.small-dataset` samples, when it has more than
    `transfer.params-per-sample` trainable parameters per sample.

    ## Why is this bad?
    A large network fitted on a few thousand samples memorises them. With little data the seeds
    advise a smaller network, or a pretrained one used as a fixed feature extractor: freeze the
    pretrained layers and train only the new classifier, then unfreeze the top block if the
    validation score asks for it. Training everything also costs more memory (gradients and
    optimizer state for every weight).

    ## Example
    ```python
    model = torchvision.models.resnet18(weights="DEFAULT")
    model.fc = nn.Linear(512, 5)
    # dldoctor check model.pt --dataset-size 800: 11.2M trainable parameters for 800 images
    ```

    ## Use instead
    ```python
    for p in model.parameters():
        p.requires_grad = False
    for p in model.fc.parameters():
        p.requires_grad = True  # feature extraction: only the head trains
    ```

    ## Options
    - `transfer.small-dataset`: dataset size (samples) below which full fine-tuning is questioned (default 10000)
    - `transfer.params-per-sample`: trainable parameters per sample above which the model is large for its data (default 100.0)
    """
    t = facts.training
    n = t.dataset_size
    if n is None or n <= 0 or n >= opts.small_dataset or t.frozen:
        return
    trainable = facts.report.params.trainable
    if trainable < opts.params_per_sample * n:
        return
    yield Hit(f"all {si(trainable)} parameters train on {n} samples ({trainable / n:,.0f} per sample): "
              "freeze the pretrained layers and train the head, or use a smaller network",
              evidence={"dataset_size": n, "trainable_params": trainable, "params_per_sample": round(trainable / n, 1),
                        "small_dataset": opts.small_dataset},
              fix="freeze the backbone (requires_grad=False) and train only the classifier; unfreeze the top block "
                  "later if validation improves, or choose a smaller model")


def _fed_by(facts: Facts, bn: Layer, main: list[Layer]) -> str | None:
    """The conv/linear layer whose output a BatchNorm normalises: its graph producer (through views),
    or without a graph the last such layer before it in forward order."""
    g = facts.graph
    if g is not None:
        node = next((n for n in g.modules() if n.target == bn.path), None)
        if node is None or not node.inputs or node.inputs[0] < 0:
            return None
        src = source(g, g.node(node.inputs[0]))
        return src.target if src.kind == "module" else None
    before = None
    for x in layers(facts, LAYERS | BATCHNORMS):
        if x.path == bn.path:
            return before
        if x.type not in BATCHNORMS:
            before = x.path
    return None


@rule(code="TRF004", name="trainable-batchnorm-in-frozen-backbone", family="transfer", severity=Severity.INFO,
      needs=("training",), source=(TRAINING_TIPS, CHOLLET))
def trainable_bn_in_frozen(facts: Facts, opts: TransferOptions) -> Iterator[Hit]:
    """## What it does
    Reports BatchNorm layers whose scale and shift train while the convolution (or linear layer)
    they normalise is frozen, in a model whose conv/linear weights are mostly frozen.

    ## Why is this bad?
    The backbone is meant to stay fixed, but it is not: the BatchNorm parameters re-scale every
    frozen feature, and in train mode the BatchNorm running statistics are re-estimated from the
    new, usually small, batches whatever `requires_grad` says. With little data this drifts the
    pretrained features away from what the frozen weights expect. Freeze the BatchNorm parameters
    with the layers around them and keep those BatchNorm layers in eval mode while fine-tuning
    (unless adapting only the BatchNorm layers is the intent).

    ## Example
    ```python
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    for m in model:
        if isinstance(m, nn.Conv2d):
            m.requires_grad_(False)  # convs frozen, BatchNorm layers still train
    ```

    ## Use instead
    ```python
    for m in model[:6]:
        m.requires_grad_(False)
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # and re-apply after every model.train()
    ```

    ## Options
    None.
    """
    t = facts.training
    if not t.frozen or not t.trainable:
        return
    main = layers(facts)
    if _share(main, True) < 0.5:
        return
    frozen = {x.path for x in main if x.frozen}
    bns = [x for x in layers(facts, BATCHNORMS) if not x.frozen and _fed_by(facts, x, main) in frozen]
    if not bns:
        return
    yield Hit(f"{len(bns)} BatchNorm layers train (e.g. {', '.join(_names(bns, 3))}) inside a backbone whose "
              f"weights are {_share(main, True):.0%} frozen: the frozen features still shift",
              location=bns[0].path,
              evidence={"trainable_batchnorms": len(bns), "frozen_share": round(_share(main, True), 4),
                        "examples": _names(bns)},
              fix="freeze the BatchNorm parameters too and put those BatchNorm modules in eval mode while fine-tuning")


@rule(code="TRF005", name="over-frozen-large-data", family="transfer", severity=Severity.INFO,
      needs=("training",), source=(TRAINING_TIPS, CHOLLET))
def over_frozen(facts: Facts, opts: TransferOptions) -> Iterator[Hit]:
    """## What it does
    Reports a model with at least `transfer.max-frozen-share` of its parameters frozen when the
    dataset, given with `--dataset-size`, has at least `transfer.large-dataset` samples.

    ## Why is this bad?
    Freezing is a remedy for little data. With a large dataset the features can safely adapt to
    the new domain, and fine-tuning most of the network (starting from the pretrained weights)
    usually beats training only a classifier on frozen features; a frozen backbone leaves that
    accuracy on the table.

    ## Example
    ```python
    model = torchvision.models.resnet50(weights="DEFAULT")
    model.requires_grad_(False); model.fc = nn.Linear(2048, 100)
    # dldoctor check model.pt --dataset-size 500000
    ```

    ## Use instead
    ```python
    model.requires_grad_(True)  # fine-tune everything (a lower learning rate for the backbone helps)
    ```

    ## Options
    - `transfer.large-dataset`: dataset size (samples) from which heavy freezing is questioned (default 100000)
    - `transfer.max-frozen-share`: frozen share of the parameters that counts as heavy freezing (default 0.9)
    """
    t = facts.training
    n = t.dataset_size
    p = facts.report.params
    if n is None or n < opts.large_dataset or not t.trainable or not p.total:
        return
    share = p.frozen / p.total
    if share < opts.max_frozen_share:
        return
    if any(ADAPTER.search(name) for name in t.trainable):
        return  # adapter fine-tuning keeps the base frozen by design
    yield Hit(f"{share:.0%} of the parameters are frozen although the dataset has {n:,} samples: "
              "with this much data, fine-tuning more of the network usually pays",
              evidence={"dataset_size": n, "frozen_share": round(share, 4), "frozen_params": p.frozen},
              fix="unfreeze the last blocks (or the whole backbone) and fine-tune with a lower learning rate for them")
