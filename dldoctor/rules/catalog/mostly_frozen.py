"""A model that can hardly train: almost every parameter frozen, with no adapters to carry the training.

Two views of the same fault: TRF006 reads `requires_grad` on the loaded model (check, inspect), TRN017
reads what a training probe actually trained (probe, watch; `dldoctor.watch` has no module to read
flags from). Training only the output layer (feature extraction, linear probing) and adapter-style
fine-tuning (LoRA, adapters, prompts: trainable modules with those words in their names) are
deliberate and left alone.
"""
from __future__ import annotations

import re
from typing import Iterator

from dldoctor.report.facts import Facts
from dldoctor.report.units import si
from dldoctor.rules.helpers.weights import head_paths
from dldoctor.rules.options import ProbeOptions, TransferOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import CHOLLET, TRAINING_TIPS, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   CHOLLET: feature extraction vs fine-tuning: which parts train
#   TRAINING_TIPS: how much to freeze for a given amount of data
#   TRANSFORMERS: pretrained models with task-specific adapters

ADAPTER = re.compile(r"lora|adapter|prompt|prefix|ia3", re.I)


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _deliberate(trainable: list[str], heads: set[str]) -> bool:
    """Adapters train, or only the output layer(s) do (feature extraction)."""
    if any(ADAPTER.search(n) for n in trainable):
        return True
    return bool(trainable) and bool(heads) and all(_owner(n) in heads for n in trainable)


def _pct(x: float) -> str:
    return f"{x:.2%}"


@rule(code="TRF006", name="mostly-frozen-model", family="transfer", severity=Severity.WARNING,
      needs=("training",), source=(CHOLLET, TRAINING_TIPS, TRANSFORMERS))
def mostly_frozen_model(facts: Facts, opts: TransferOptions) -> Iterator[Hit]:
    """## What it does
    Reports a model in which fewer than `transfer.min-trainable-share` of the parameters have
    `requires_grad=True` (none at all included), when what does train is neither an adapter
    (LoRA, adapter or prompt modules) nor just the output layer. It says what share cannot train.

    ## Why is this bad?
    An optimizer built on such a model moves almost nothing: the loss barely falls and the model
    ends where it started. It is the residue of a freezing loop that caught too much
    (`model.requires_grad_(False)` called after the new head was attached, a name filter that
    matched every layer) or of a checkpoint saved while frozen for export. Freezing everything but
    the new head, or training small adapters inside a frozen backbone, are deliberate and not
    reported.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    model.requires_grad_(False)  # frozen after the head was attached: nothing trains
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    model[0].requires_grad_(False)  # freeze the body, train the head
    ```

    ## Options
    - `transfer.min-trainable-share`: the trainable share of parameters below which the model counts
      as mostly frozen (default 0.01).
    """
    total = facts.report.params.total
    trainable = facts.report.params.trainable
    if not total:
        return
    share = trainable / total
    if share >= opts.min_trainable_share or _deliberate(facts.training.trainable, head_paths(facts)):
        return
    what = (f"only {si(trainable)} of {si(total)} parameters train" if trainable
            else f"none of the {si(total)} parameters trains")
    yield Hit(f"{_pct(1 - share)} of the parameters cannot train (requires_grad=False): {what}, and no adapter "
              "or output layer accounts for them",
              location=(facts.training.trainable[0].rsplit(".", 1)[0] if facts.training.trainable else None),
              evidence={"trainable": trainable, "total": total, "trainable_share": round(share, 6),
                        "trainable_names": facts.training.trainable[:5]},
              fix="unfreeze what should learn (requires_grad_(True) on the new head and the top blocks), "
                  "or add adapters (LoRA) if the backbone is meant to stay frozen")


@rule(code="TRN017", name="probe-trained-almost-nothing", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(CHOLLET, TRAINING_TIPS, TRANSFORMERS))
def probe_trained_almost_nothing(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Reads which parameters the training probe trained (`dldoctor probe`, `dldoctor.watch`) and
    reports when they are fewer than `probe.min-trained-share` of the model's parameters, none
    at all included, unless what trained is adapters (LoRA, adapter, prompt modules) or only the
    output layer. It says what share could not train.

    ## Why is this bad?
    The run measured it: the optimizer had almost nothing to move, so whatever the loss curve
    does, the model will not change much. With `dldoctor.watch` in a real training loop it is the
    direct evidence that a freezing step caught too much. Deliberate feature extraction and
    adapter fine-tuning are left alone.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model.requires_grad_(False)
    model[0].bias.requires_grad_(True)  # one bias vector is all that trains
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model[:2].requires_grad_(False)  # freeze the first layer, train the rest
    ```

    ## Options
    - `probe.min-trained-share`: the share of parameters the probe must train (default 0.01).
    """
    res = facts.probe
    total = facts.report.params.total
    if not total or not res.steps:
        return
    names = {p.name: p.numel for p in res.params if p.requires_grad}
    trained = sum(names.values())
    share = trained / total
    if share >= opts.min_trained_share or _deliberate(list(names), head_paths(facts)):
        return
    yield Hit(f"the probe trained {si(trained)} of {si(total)} parameters: {_pct(1 - share)} of the model could "
              "not train (requires_grad=False), with no adapters or output layer to account for it",
              location=next(iter(names), "").rsplit(".", 1)[0] or None,
              evidence={"trained": trained, "total": total, "trained_share": round(share, 6),
                        "trained_names": list(names)[:5]},
              fix="unfreeze what should learn before building the optimizer, or train adapters (LoRA) if the "
                  "backbone is meant to stay frozen")
