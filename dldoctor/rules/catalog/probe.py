"""Training dynamics: what a short training run (`dldoctor probe`, `dldoctor.watch`) shows.

These rules read the statistics a probe recorded (see dldoctor/report/probe_types.py): gradient
norms per parameter, activation statistics per layer, update-to-weight ratios, the loss
curve, NaN/Inf, the output and the inputs. Thresholds are `[tool.dldoctor.probe]`
options, calibrated so that the healthy controls in tests/fixtures/probe_cases.py (MLP, MLP+BN,
Conv-BN-ReLU CNN, a 50-block residual MLP, a tanh RNN, a small transformer) stay silent:
a healthy Conv-BN-ReLU net can show a first-to-last gradient ratio near 0.07 and a deep
ReLU MLP over 60% zero gradients, so the literature's tighter defaults are not used.
"""
from __future__ import annotations

import math
import statistics
from typing import Iterator

from dldoctor.report.probe_types import ParamProbe, ProbeResult
from dldoctor.report.facts import Facts
from dldoctor.rules.helpers.graph import EMBEDDINGS, RELU_MODULES, SATURATING_MODULES
from dldoctor.rules.options import ProbeOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import ARCHITECTURE, CHOLLET, HANDBOOK, TRAINING_TIPS, TRANSFORMERS
from dldoctor.report.types import Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   ARCHITECTURE: residual connections and ReLU against vanishing gradients; gradient clipping
#   HANDBOOK: gradient/activation histograms for debugging; dying ReLU; learning-rate schedules
#   CHOLLET: feature-wise input normalization; tune the learning rate
#   TRANSFORMERS: exploding gradients and clipping; warmup; activations against vanishing gradients
#   TRAINING_TIPS: input normalization; initialization scale; batch norm allows higher learning rates

RELU_LIKE = RELU_MODULES | {"F.relu", "F.relu6"}  # F.*: functional ReLUs the probe records as layers
BOUNDED_HEADS = {"ReLU": (0.0, math.inf), "ReLU6": (0.0, 6.0), "Softplus": (0.0, math.inf),
                 "Sigmoid": (0.0, 1.0), "Hardsigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0), "Softmax": (0.0, 1.0)}
MAX_LISTED = 12


def _median(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(v) if v else None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _probe(facts: Facts) -> ProbeResult:
    return facts.probe


def weight_params(res: ProbeResult) -> list[ParamProbe]:
    """Weight matrices (2-D and up) of the probed model, in forward order of their modules."""
    order = {lp.path: lp.order for lp in res.layers}
    ws = [p for p in res.params if len(p.shape) >= 2 and p.name.rsplit(".", 1)[-1].startswith("weight")
          or (len(p.shape) >= 2 and p.name.endswith("proj_weight"))]
    ws = [p for p in ws if p.module_type not in EMBEDDINGS]
    return sorted(ws, key=lambda p: (order.get(p.module, 10**9), res.params.index(p)))


def _early(p: ParamProbe, k: int = 3) -> float | None:
    """The gradient norm over the first recorded steps (the median, to ride over one odd batch)."""
    return _median(p.grad_norm[:k])


def _grad_ratios(res: ProbeResult) -> list[tuple[ParamProbe, float]]:
    """Each weight's early gradient norm divided by the last weight's (the head's)."""
    ws = [p for p in weight_params(res) if _early(p)]  # exactly 0 is a cut graph or dead layer (TRN004, TRN006)
    if len(ws) < 2:
        return []
    last = _early(ws[-1])
    if not last:
        return []
    return [(p, _early(p) / last) for p in ws]


def _listing(pairs: list[tuple[str, float | None]]) -> dict[str, float | None]:
    return {k: (None if v is None else float(f"{v:.4g}")) for k, v in pairs[:MAX_LISTED]}


def _update_median(res: ProbeResult, first: int | None = None) -> float | None:
    """Median update-to-weight ratio of the weight matrices (over the first `first` steps, or all)."""
    return _median([r for p in weight_params(res) for r in (p.update_ratio[:first] if first else p.update_ratio)])


def _loss_drop(res: ProbeResult) -> float | None:
    a, b = res.initial_loss, res.final_loss
    if a is None or b is None or a <= 0:
        return None
    return (a - b) / a


def lr_too_high(res: ProbeResult, opts: ProbeOptions) -> tuple[bool, dict]:
    med = _update_median(res, first=5)  # the rate is judged where it acts first, before the weights grow
    finite = [x for x in res.loss if x is not None]
    a = res.initial_loss
    diverged = bool(finite) and a is not None and a > 0 and max(finite[1:] or [0]) > 3 * a
    high = med is not None and med > opts.max_update_ratio
    return (high or (diverged and (med or 0) > opts.max_update_ratio / 10)), {"median_update_ratio": med,
                                                                               "loss_diverged": diverged}


def lr_too_low(res: ProbeResult, opts: ProbeOptions) -> tuple[bool, dict]:
    med = _update_median(res)
    drop = _loss_drop(res)
    low = med is not None and 0 < med < opts.min_update_ratio and (drop is None or drop < opts.min_loss_drop)
    return low, {"median_update_ratio": med, "loss_drop": drop}


# below this median update-to-weight ratio a loss that does not fall is first a learning-rate matter: Adam at
# 1e-4 moves weights by ~1e-3 of their norm per step, the probe's defaults (3e-3) by ~1e-2
SMALL_UPDATE = 3e-3


def _stopped(res: ProbeResult) -> bool:
    return res.error is not None or res.first_nonfinite is not None or res.loss_nonfinite_step is not None


# -- rules ---------------------------------------------------------------------------------------


@rule(code="TRN001", name="vanishing-gradients", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(ARCHITECTURE, TRANSFORMERS, HANDBOOK))
def vanishing_gradients(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Compares the gradient norm of every weight matrix with the one of the output layer over the
    first steps of the probe, and reports when the early layers receive a vanishing fraction of
    it, naming the layer nearest the output where the gradient has already fallen below the
    threshold: that is where the signal starts to die.

    ## Why is this bad?
    Layers whose gradient is a millionth of the head's do not learn in any useful time: the network
    trains as if it were only its last few layers deep. Deep stacks of sigmoid or tanh, weights
    initialised too small, and long plain chains without skip connections or normalization are the
    usual causes.

    ## Example
    ```python
    layers = []
    for _ in range(12):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    model = nn.Sequential(nn.Linear(20, 64), *layers, nn.Linear(64, 10))
    ```

    ## Use instead
    ```python
    layers = []
    for _ in range(12):
        layers += [nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU()]  # ReLU + normalization (or residual blocks)
    model = nn.Sequential(nn.Linear(20, 64), *layers, nn.Linear(64, 10))
    ```

    ## Options
    - `probe.vanishing-ratio`: first-to-last gradient-norm ratio below which gradients vanish (default 1e-4)
    """
    res = _probe(facts)
    ratios = _grad_ratios(res)
    if not ratios:
        return
    low = [(p, r) for p, r in ratios[:-1] if r < opts.vanishing_ratio]
    if not low or ratios[0][1] >= opts.vanishing_ratio:
        return
    # the layer nearest the output that is already below the threshold: where the signal dies
    start = low[-1][0]
    yield Hit(f"the first layer's gradient is {_fmt(ratios[0][1])} of the output layer's; gradients vanish from "
              f"{start.module or start.name} backwards ({len(low)} of {len(ratios)} weight layers below "
              f"{opts.vanishing_ratio:g})",
              location=start.module or start.name,
              evidence={"first_to_last_ratio": ratios[0][1], "threshold": opts.vanishing_ratio,
                        "ratio_to_output_layer": _listing([(p.name, r) for p, r in ratios])},
              fix="use ReLU-family activations in hidden layers, He initialisation, batch/layer normalization, "
                  "or residual connections around the deep part")


@rule(code="TRN002", name="exploding-gradients", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(TRANSFORMERS, ARCHITECTURE))
def exploding_gradients(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Reports gradients far larger than the weights they update (‖g‖ / ‖w‖ in the thousands at the
    first steps), gradients that grow on their way back to the input (an early layer's gradient
    norm far above the output layer's), or a total gradient norm that grows by orders of magnitude
    during the probe. Non-finite gradients are TRN003's.

    ## Why is this bad?
    Huge gradients make the updates of the early layers huge: the loss jumps around or diverges,
    and one step later the weights may be Inf or NaN. Weights initialised too large, missing
    normalization and a learning rate too high for the depth are the usual causes.

    ## Example
    ```python
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(10)], nn.Linear(64, 10))
    for m in model[:-1]:
        nn.init.normal_(m.weight, std=0.5)  # every layer multiplies the signal by 4
    ```

    ## Use instead
    ```python
    model = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(10)], nn.Linear(64, 10))
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # in the training step, after backward
    ```

    ## Options
    - `probe.exploding-ratio`: first-to-last gradient-norm ratio above which gradients explode (default 1e3)
    - `probe.exploding-growth`: growth of the total gradient norm over the run that counts as exploding (default 1e3)
    - `probe.exploding-grad-weight`: gradient norm, as a multiple of its weight's norm, that counts as exploding (default 1e3)
    """
    res = _probe(facts)
    ratios = _grad_ratios(res)
    worst = max(ratios[:-1], key=lambda t: t[1], default=None)
    totals = []
    for i in range(len(res.steps)):
        sq = [p.grad_norm[i] ** 2 for p in res.params if i < len(p.grad_norm) and p.grad_norm[i] is not None]
        totals.append(math.sqrt(sum(sq)) if sq else None)
    t0 = _median(totals[:2])
    peak = max((t for t in totals if t is not None), default=None)
    growth = peak / t0 if t0 and peak else None
    gw = [(p, _early(p) / p.weight_norm[0]) for p in weight_params(res)
          if _early(p) is not None and p.weight_norm and p.weight_norm[0]]
    big_gw = max(gw, key=lambda t: t[1], default=None)
    if big_gw is not None and big_gw[1] > opts.exploding_grad_weight:
        p = next(q for q, r in gw if r > opts.exploding_grad_weight)  # the first layer, in forward order, above it
        yield Hit(f"gradients reach {_fmt(big_gw[1])}× the norm of the weights they update at the first steps, from "
                  f"{p.module or p.name} on: one step of any usual learning rate would wipe those layers out",
                  location=p.module or p.name,
                  evidence={"max_grad_to_weight": big_gw[1], "threshold": opts.exploding_grad_weight,
                            "grad_to_weight": _listing([(q.name, r) for q, r in gw])},
                  fix="initialise with He/Xavier scaling (not larger), add normalization, clip the gradient norm "
                      "(torch.nn.utils.clip_grad_norm_) and lower the learning rate")
    elif worst is not None and worst[1] > opts.exploding_ratio:
        # the layer nearest the output already above the threshold: where the growth starts
        big = [(p, r) for p, r in ratios[:-1] if r > opts.exploding_ratio]
        start = big[-1][0]
        yield Hit(f"the gradient grows on its way back: {worst[0].module or worst[0].name} gets {_fmt(worst[1])}× the "
                  f"output layer's gradient norm, from {start.module or start.name} backwards",
                  location=start.module or start.name,
                  evidence={"max_ratio_to_output_layer": worst[1], "threshold": opts.exploding_ratio,
                            "ratio_to_output_layer": _listing([(p.name, r) for p, r in ratios])},
                  fix="initialise with He/Xavier scaling (not larger), add normalization, clip the gradient norm "
                      "(torch.nn.utils.clip_grad_norm_) and lower the learning rate")
    elif growth is not None and growth > opts.exploding_growth:
        step = res.steps[totals.index(peak)]
        yield Hit(f"the total gradient norm grew {_fmt(growth)}× during the probe (to {_fmt(peak)} at step {step})",
                  location=None, evidence={"growth": growth, "initial_norm": t0, "peak_norm": peak, "step": step},
                  fix="clip the gradient norm (torch.nn.utils.clip_grad_norm_), lower the learning rate, add a warmup")


@rule(code="TRN003", name="non-finite-values", family="probe", severity=Severity.ERROR,
      needs=("probe",), source=(TRANSFORMERS, HANDBOOK))
def non_finite_values(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Reports the first NaN or Inf the probe saw, in the loss, a layer's output, a gradient or a
    weight, with the step and the place where it first appeared.

    ## Why is this bad?
    A NaN spreads to everything computed from it: one step later every weight it touched is NaN
    and the run is lost. Where it appears first says why: in a layer's output at step 0 it is the
    forward (a log or division of zero, an overflow); after some steps it is usually a learning
    rate too high or exploding gradients.

    ## Example
    ```python
    class Net(nn.Module):
        def forward(self, x):
            return self.fc(torch.log(x))  # log of negative inputs: NaN
    ```

    ## Use instead
    ```python
    class Net(nn.Module):
        def forward(self, x):
            return self.fc(torch.log(x.clamp_min(1e-6)))  # or log1p / softplus on a safe domain
    ```

    ## Options
    None.
    """
    res = _probe(facts)
    first = res.first_nonfinite
    if first is None and res.loss_nonfinite_step is None:
        return
    if first is None:
        first = {"step": res.loss_nonfinite_step, "kind": "loss", "where": "loss"}
    kind, where, step = first["kind"], first["where"], first["step"]
    what = {"activation": f"the output of {where}", "gradient": f"the gradient of {where}",
            "weight": f"the weight {where} after the update", "loss": "the loss"}[kind]
    if kind == "activation" and step == 0:
        fix = f"the forward pass itself makes NaN/Inf at {where}: guard logs, divisions and exponentials " \
              "(clamp, eps, log_softmax instead of log(softmax))"
    else:
        fix = "lower the learning rate, clip the gradient norm, check the loss for log(0); in fp16 use loss scaling or bf16"
    yield Hit(f"NaN/Inf first appeared in {what} at step {step}", location=None if kind == "loss" else where,
              evidence={"step": step, "kind": kind, "where": where, "loss_nonfinite_step": res.loss_nonfinite_step},
              fix=fix)


@rule(code="TRN004", name="dying-relu", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK,))
def dying_relu(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Finds ReLU layers where most units (channels of a conv map, features of a dense layer) output
    zero for every sample of the batch at the end of the probe: dead units, which receive no
    gradient and so never come back. `nn.ReLU` modules and functional calls (`F.relu`,
    `torch.relu`, `x.relu()` inside a forward, reported as `block.relu()`) are both measured.

    ## Why is this bad?
    A dead unit is wasted width: it costs parameters and compute and contributes nothing. When
    most units of a layer die, the signal and the gradient through that layer are nearly cut.
    Large negative biases, a learning rate too high, and weights initialised with a negative mean
    are the usual causes.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.constant_(model[0].bias, -10.0)  # every pre-activation negative
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.LeakyReLU(0.01), nn.Linear(64, 10))  # or fix the init / lr
    ```

    ## Options
    - `probe.dead-unit-share`: share of a ReLU layer's units that are 0 for every sample (default 0.5)
    """
    res = _probe(facts)
    dead = []
    for lp in res.layers:
        if lp.type not in RELU_LIKE or lp.type == "LeakyReLU":
            continue
        d = _median(lp.dead_frac[-3:])
        if d is not None and d >= opts.dead_unit_share:
            dead.append((lp, d))
    if not dead:
        return
    lp, d = dead[0]
    yield Hit(f"{d:.0%} of the {lp.units or ''} units of {lp.path} output 0 for every sample "
              f"({len(dead)} ReLU layer(s) at or above {opts.dead_unit_share:.0%})",
              location=lp.path,
              evidence={"dead_share": d, "threshold": opts.dead_unit_share, "units": lp.units,
                        "dead_share_per_layer": _listing([(x.path, v) for x, v in dead])},
              fix="check the biases and the init of the layer before it (He init, bias 0), lower the learning rate, "
                  "or use LeakyReLU/GELU, which keep a gradient for negative inputs")


@rule(code="TRN005", name="saturated-activations", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK, TRANSFORMERS))
def saturated_activations(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Finds sigmoid and tanh layers whose inputs mostly lie beyond ±5 (configurable) during the
    probe, where the function is flat.

    ## Why is this bad?
    In its flat region a sigmoid's slope is below 0.007 and a tanh's below 0.0002: almost no
    gradient passes, the layers before it stop learning, and the output is stuck near 0/1 (or
    ±1). Inputs that large come from unnormalised data, large initial weights or missing
    normalization before the activation.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.Sigmoid(), nn.Linear(64, 10))
    nn.init.normal_(model[0].weight, std=3.0)  # pre-activations of std ~13
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.LayerNorm(64), nn.Sigmoid(), nn.Linear(64, 10))  # or ReLU, or Xavier init
    ```

    ## Options
    - `probe.saturation`: |pre-activation| beyond which sigmoid/tanh count as saturated (default 5.0); set before the run
    - `probe.saturated-share`: share of saturated pre-activations in a layer (default 0.5)
    """
    res = _probe(facts)
    sat = []
    for lp in res.layers:
        if lp.type not in SATURATING_MODULES:
            continue
        s = _median(lp.saturated_frac)
        if s is not None and s > opts.saturated_share:
            sat.append((lp, s))
    if not sat:
        return
    lp, s = sat[0]
    yield Hit(f"{s:.0%} of the inputs of {lp.type} {lp.path} lie beyond ±{res.config.get('saturation', opts.saturation):g}, "
              f"where it passes almost no gradient ({len(sat)} saturated layer(s))",
              location=lp.path,
              evidence={"saturated_share": s, "threshold": opts.saturated_share,
                        "per_layer": _listing([(x.path, v) for x, v in sat])},
              fix="normalise the layer's input (BatchNorm/LayerNorm before the activation), use Xavier init, "
                  "or use ReLU-family activations in hidden layers")


@rule(code="TRN006", name="stuck-parameters", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK,))
def stuck_parameters(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Lists trainable parameters (requires_grad=True) that never changed during the probe, and says
    why: no gradient ever reached them (detached, unused, or a branch the forward skips), their
    gradient was exactly zero at every step, or they had a gradient but the optimizer did not
    move them (not in its parameter groups, or a learning rate of 0).

    ## Why is this bad?
    A parameter that is meant to train and does not is a silent bug: the model trains, the loss
    falls a little, and part of the network stays at its initial random values. A `.detach()`,
    a `.data` assignment, a tensor re-created in `forward`, or an optimizer built before layers
    were replaced are the usual causes. Parameters frozen on purpose (requires_grad=False) are
    not reported.

    ## Example
    ```python
    class Net(nn.Module):
        def forward(self, x):
            h = self.body(x).detach()  # cuts the graph: body never trains
            return self.head(h)
    ```

    ## Use instead
    ```python
    class Net(nn.Module):
        def forward(self, x):
            return self.head(self.body(x))
    ```

    ## Options
    None.
    """
    res = _probe(facts)
    if not res.steps or _stopped(res):
        return  # a run that stopped early had no chance to move anything
    slow = lr_too_low(res, opts)[0]  # updates below float resolution are TRN010's
    stuck = []
    outside = set(res.config.get("outside_objective") or ())  # feed only outputs the probe does not train on
    for p in res.params:
        if p.changed is not False or p.name in outside:
            continue
        grads = [g for g in p.grad_norm if g is not None]
        if not grads:
            why = "no gradient reached it"
        elif max(grads) == 0:
            why = "its gradient was exactly 0 at every step"
        elif slow:
            continue
        else:
            why = "it had a gradient, but the optimizer never moved it"
        stuck.append((p, why))
    if not stuck:
        return
    p, why = stuck[0]
    total = sum(x.numel for x, _ in stuck)
    yield Hit(f"{len(stuck)} trainable parameter tensor(s) ({total:,} values) never changed; {p.name}: {why}",
              location=p.module or p.name,
              evidence={"tensors": len(stuck), "values": total,
                        "per_tensor": {x.name: w for x, w in stuck[:MAX_LISTED]}},
              fix="look for .detach(), .data or torch.no_grad() on the path from these parameters to the loss, "
                  "modules that forward() never calls, and an optimizer built before the model was changed")


@rule(code="TRN007", name="loss-not-decreasing", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(CHOLLET, HANDBOOK))
def loss_not_decreasing(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    On the probe's fixed batch, checks that the loss fell by at least half (configurable) of its
    initial value. A model that cannot overfit one small batch it sees over and over has a bug.
    When a learning-rate rule (TRN009, TRN010) or a NaN (TRN003) already explains it, this rule
    stays silent.

    ## Why is this bad?
    Memorising a handful of samples is the easiest task there is; a network that cannot do it
    will not learn the real data either, and hours of training would only show a flat curve.
    Common causes: the targets do not match the output (wrong loss, wrong shape broadcast), the
    graph is cut, a layer is dead, or the learning rate is off.

    ## Example
    ```python
    class Net(nn.Module):
        def forward(self, x):
            return self.head(torch.zeros_like(self.body(x)))  # the input never reaches the head
    ```

    ## Use instead
    ```python
    class Net(nn.Module):
        def forward(self, x):
            return self.head(self.body(x))
    ```

    ## Options
    - `probe.min-loss-drop`: share of the initial loss the probe must remove (default 0.5)
    """
    res = _probe(facts)
    if _stopped(res) or len(res.loss) < 2 or "synthetic" not in str(res.config.get("data", "")):
        return
    if lr_too_high(res, opts)[0] or lr_too_low(res, opts)[0]:
        return
    drop = _loss_drop(res)
    if drop is None or drop >= opts.min_loss_drop:
        return
    med = _update_median(res)
    yield Hit(f"the loss fell only {max(drop, 0):.0%} (from {_fmt(res.initial_loss)} to {_fmt(res.final_loss)}) in "
              f"{len(res.loss)} steps on one repeated batch",
              location=None,
              evidence={"initial_loss": res.initial_loss, "final_loss": res.final_loss, "drop": drop,
                        "threshold": opts.min_loss_drop, "steps": len(res.loss), "lr": res.config.get("lr"),
                        "optimizer": res.config.get("optimizer")},
              fix=(f"the updates are small (median {_fmt(med)} of the weight norm per step): raise the learning "
                   "rate first (Adam ~1e-3, SGD with momentum ~1e-2 to 1e-1)" if med is not None and med < SMALL_UPDATE
                   else "check that the output and the loss match (logits for cross-entropy), that no .detach() cuts "
                        "the graph, and that every layer passes a signal (see the other probe findings)"))


@rule(code="TRN008", name="initial-loss-off", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(TRAINING_TIPS,))
def initial_loss_off(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Compares the loss at the first step with what an untrained head should give: ln C for
    cross-entropy over C balanced classes, ln 2 for binary cross-entropy. Reports a first loss
    more than 3× (configurable) away from it, in either direction.

    ## Why is this bad?
    A freshly initialised classifier should be unsure of everything. A first loss of 30 when ln C
    is 2.3 means the logits are huge: the output layer (or the ones before it) is initialised far
    too large, or the output is scaled by mistake. The first steps are then spent shrinking the
    weights, and the run can diverge.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.normal_(model[2].weight, std=5.0)  # logits of std ~25
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))  # default init; zero-init the head is fine too
    ```

    ## Options
    - `probe.initial-loss-factor`: how far (as a factor) the first loss may be from the chance loss (default 3.0)
    """
    res = _probe(facts)
    exp, got = res.expected_initial_loss, res.initial_loss
    if exp is None or got is None or exp <= 0:
        return
    out = res.output or {}
    if out.get("prob_like") or out.get("log_prob_like") and res.config.get("loss") == "ce":
        return  # TRN012 speaks of outputs that are not logits
    f = opts.initial_loss_factor
    if got > f * exp or got < exp / f:
        side = "above" if got > exp else "below"
        yield Hit(f"the first loss is {_fmt(got)}, {got / exp:.1f}× the {_fmt(exp)} an untrained head should give "
                  f"({res.config.get('loss')}, {res.num_classes} classes): {side} chance",
                  location=None,
                  evidence={"initial_loss": got, "expected": exp, "ratio": got / exp, "factor": f,
                            "classes": res.num_classes, "output_min": out.get("min"), "output_max": out.get("max")},
                  fix="initialise the output layer small (default or zero init, bias at the class prior) and check "
                      "that nothing scales the logits")


@rule(code="TRN009", name="learning-rate-too-high", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK, TRANSFORMERS, CHOLLET))
def learning_rate_too_high(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Measures each step's update relative to the weights (‖Δw‖ / ‖w‖) and reports a median above
    0.1 (configurable), or a loss that climbs to several times its first value while updates are
    large.

    ## Why is this bad?
    Healthy training moves a weight matrix by roughly a thousandth of its norm per step. Updates
    of 10% or more per step throw away what was learned at every step: the loss jumps or
    diverges, ReLUs die, and NaNs follow.

    ## Example
    ```python
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    ```

    ## Use instead
    ```python
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # then tune with a short LR sweep and a warmup
    ```

    ## Options
    - `probe.max-update-ratio`: median per-step update-to-weight ratio above which the rate is too high (default 0.1)
    """
    res = _probe(facts)
    high, ev = lr_too_high(res, opts)
    if not high:
        return
    yield Hit(f"updates move the weights by {_fmt(ev['median_update_ratio'])} of their norm per step (median) at "
              f"lr {res.config.get('lr')} ({res.config.get('optimizer')})"
              + ("; the loss diverged" if ev["loss_diverged"] else ""),
              location=None, evidence={**ev, "threshold": opts.max_update_ratio, "lr": res.config.get("lr")},
              fix="lower the learning rate by 10× or more and add a warmup; an LR range test finds the largest stable one")


@rule(code="TRN010", name="learning-rate-too-low", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK, CHOLLET))
def learning_rate_too_low(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Reports a median update-to-weight ratio below 1e-4 (configurable) per step together with a
    loss that barely falls.

    ## Why is this bad?
    At a ten-thousandth of the weights per step, a run needs tens of thousands of steps to change anything:
    the curve is flat and it looks like the model cannot learn. A learning rate copied from a
    different optimizer (SGD's 1e-1 vs Adam's 1e-3, or a scheduler that decayed to ~0) is the
    usual cause.

    ## Example
    ```python
    opt = torch.optim.Adam(model.parameters(), lr=1e-8)
    ```

    ## Use instead
    ```python
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ```

    ## Options
    - `probe.min-update-ratio`: median per-step update-to-weight ratio below which the rate is too low (default
      1e-4: Adam moves each weight by about the learning rate, so its ratio is about lr / rms(w), 1e-4 at lr 1e-5
      on default-initialised layers, against 1e-2 at the probe's defaults)
    - `probe.min-loss-drop`: the loss must also have fallen less than this share (default 0.5)
    """
    res = _probe(facts)
    low, ev = lr_too_low(res, opts)
    if not low:
        return
    yield Hit(f"updates move the weights by only {_fmt(ev['median_update_ratio'])} of their norm per step at lr "
              f"{res.config.get('lr')} ({res.config.get('optimizer')}), and the loss fell "
              f"{max(ev['loss_drop'] or 0, 0):.0%}",
              location=None, evidence={**ev, "threshold": opts.min_update_ratio, "lr": res.config.get("lr")},
              fix="raise the learning rate (Adam ~1e-3, SGD with momentum ~1e-2 to 1e-1) and check the scheduler")


@rule(code="TRN011", name="head-range-mismatch", family="probe", severity=Severity.ERROR,
      needs=("probe",), source=(HANDBOOK,))
def head_range_mismatch(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    For regression losses (MSE, L1, Huber), compares the range the output activation can reach
    (ReLU and Softplus: ≥ 0; sigmoid: 0 to 1; tanh: -1 to 1) with the targets, and reports
    targets the head can never produce.

    ## Why is this bad?
    A ReLU head cannot output a negative number; a sigmoid head cannot output 3. Every target out
    of reach leaves a residual error that no training removes, and for a ReLU head the gradient of
    samples on the wrong side is zero. Regression heads should be linear unless the target is
    bounded the same way.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1), nn.ReLU())  # targets can be negative
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))  # linear head for signed targets
    ```

    ## Options
    None.
    """
    res = _probe(facts)
    out = res.output or {}
    act = out.get("head_activation")
    if res.config.get("loss") not in ("mse", "l1", "huber") or act not in BOUNDED_HEADS:
        return
    lo, hi = BOUNDED_HEADS[act]
    tmin, tmax = out.get("target_min"), out.get("target_max")
    if tmin is None or tmax is None or (tmin >= lo - 1e-6 and tmax <= hi + 1e-6):
        return
    head = next((lp.path for lp in sorted(res.layers, key=lambda x: x.order, reverse=True) if lp.type == act), None)
    yield Hit(f"the output goes through {act} (range {lo:g} to {hi:g}) but the {res.config.get('loss')} targets span "
              f"{_fmt(tmin)} to {_fmt(tmax)}: part of them can never be reached",
              location=head, evidence={"head_activation": act, "head_range": [lo, hi if math.isfinite(hi) else None],
                                       "target_min": tmin, "target_max": tmax},
              fix=f"remove the {act} from the regression head (a linear output), or rescale the targets into its range")


@rule(code="TRN012", name="loss-input-mismatch", family="probe", severity=Severity.ERROR,
      needs=("probe",), source=(HANDBOOK,))
def loss_input_mismatch(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Looks at what the model actually outputs and at what the loss expects: probabilities (rows in
    [0, 1] summing to 1) fed to cross-entropy, which expects logits; probabilities fed to NLL,
    which expects log-probabilities; outputs in [0, 1] after a sigmoid fed to a with-logits BCE;
    logits fed to plain BCE. Log-softmax followed by cross-entropy is harmless (a second
    log-softmax changes nothing) and is not reported.

    ## Why is this bad?
    Cross-entropy on probabilities applies a softmax twice: the outputs are squeezed into a narrow
    range, the gradient shrinks as the model gets confident, and the loss plateaus. NLL on
    probabilities trains towards the wrong optimum. Sigmoid before BCEWithLogits squashes twice.
    None of these crash; they train badly.

    ## Example
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1))
    loss = F.cross_entropy(model(x), y)
    ```

    ## Use instead
    ```python
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))  # logits; softmax only at inference
    loss = F.cross_entropy(model(x), y)
    ```

    ## Options
    None.
    """
    res = _probe(facts)
    out = res.output or {}
    loss = res.config.get("loss")
    msg = fix = None
    if loss == "ce" and out.get("prob_like"):
        msg = "the model outputs probabilities (rows in [0, 1] summing to 1) but cross-entropy expects logits"
        fix = "drop the softmax from the model (apply it only at inference), or use NLL on log_softmax outputs"
    elif loss == "nll" and out.get("prob_like"):
        msg = "the model outputs probabilities but NLL expects log-probabilities"
        fix = "use log_softmax instead of softmax as the last operation (or output logits and use cross-entropy)"
    elif loss == "nll" and not out.get("log_prob_like") and (out.get("max") or 0) > 0:
        msg = "the model outputs unnormalised scores (positive values) but NLL expects log-probabilities"
        fix = "add log_softmax as the last operation, or use cross-entropy on the raw logits"
    elif loss == "bce_logits" and out.get("unit_interval") and out.get("head_activation") in ("Sigmoid", "Hardsigmoid"):
        msg = "the model ends in a sigmoid but BCEWithLogits applies its own: the sigmoid is applied twice"
        fix = "remove the final sigmoid (apply torch.sigmoid only at inference)"
    elif loss == "bce" and not out.get("unit_interval"):
        msg = f"plain BCE expects probabilities in [0, 1], but the model outputs {_fmt(out.get('min'))} to {_fmt(out.get('max'))}"
        fix = "use BCEWithLogitsLoss on the raw outputs (numerically safer than sigmoid + BCE)"
    if msg is None:
        return
    head = max(res.layers, key=lambda x: x.order).path if res.layers else None
    yield Hit(msg, location=head, evidence={"loss": loss, "output_min": out.get("min"), "output_max": out.get("max"),
                                            "row_sum": out.get("row_sum"), "head_activation": out.get("head_activation")},
              fix=fix)


@rule(code="TRN013", name="samples-mixed", family="probe", severity=Severity.ERROR,
      needs=("probe",), source=(HANDBOOK,))
def samples_mixed(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    In eval mode, changes every sample of a batch but the first and checks that the first
    sample's output stays the same. Reports the first layer whose output for that sample
    changed: the batch dimension was mixed just before it.

    ## Why is this bad?
    Outside batch normalization in training mode, a sample's prediction must not depend on the
    other samples in its batch. When it does, a reshape, transpose, or a softmax/normalization
    over the wrong dimension has mixed samples: the model trains (it can even look good on a
    fixed batch size) and then gives different answers at a different batch size or alone.

    ## Example
    ```python
    def forward(self, x):            # x: (batch, features)
        h = self.fc1(x)
        h = h.t().reshape(h.shape)   # a transpose that mixes the batch into the features
        return self.fc2(h)
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc2(self.fc1(x))   # reshape with the batch dimension kept: x.reshape(x.shape[0], -1)
    ```

    ## Options
    None.
    """
    res = _probe(facts)
    ind = res.independence or {}
    if not ind.get("mixed"):
        return
    where = ind.get("first_mixed_layer")
    yield Hit("sample 0's output changes when only the other samples of the batch change (eval mode)"
              + (f"; the first layer whose output for sample 0 changes is {where}" if where else ""),
              location=where, evidence={"max_relative_change": ind.get("max_change"), "method": ind.get("method"),
                                        "first_mixed_layer": where},
              fix="keep the batch dimension apart in reshapes (x.reshape(x.shape[0], -1)), transpose the right "
                  "dimensions, and take softmax/normalization over features, not dim 0")


@rule(code="TRN014", name="unnormalized-inputs", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(TRAINING_TIPS, CHOLLET))
def unnormalized_inputs(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    On the user's own batches (`--data`, or `dldoctor.watch`), checks the model's float input:
    NaN or Inf values, and a mean or standard deviation far outside the unit scale (raw 0–255
    pixels, unscaled physical units).

    ## Why is this bad?
    Inputs in the hundreds make the first layer's pre-activations hundreds of times larger than
    its initialisation assumes: saturated activations, huge first-layer gradients, a learning
    rate that is too high for that layer and too low for the others. NaN inputs poison the batch.

    ## Example
    ```python
    x = images.float()  # pixels 0..255
    ```

    ## Use instead
    ```python
    x = (images.float() / 255 - mean) / std  # per-channel normalization with the training set's statistics
    ```

    ## Options
    - `probe.input-scale`: |mean| or std beyond which inputs count as unnormalized (default 10.0)
    """
    res = _probe(facts)
    x = res.inputs or {}
    if x.get("synthetic", True) or not x.get("float"):
        return
    if x.get("nan"):
        yield Hit(f"the input batch holds {x['nan']} NaN/Inf values", location="input", severity=Severity.ERROR,
                  evidence={"nonfinite": x["nan"], "shape": x.get("shape")},
                  fix="clean or impute the data before it reaches the model (torch.nan_to_num, or drop the samples)")
        return
    mean, std = x.get("mean"), x.get("std")
    if mean is None or std is None:
        return
    if abs(mean) > opts.input_scale or std > opts.input_scale:
        raw = " (integer values: raw pixel or count data?)" if x.get("integer_valued") else ""
        yield Hit(f"the inputs have mean {_fmt(mean)} and std {_fmt(std)} (range {_fmt(x.get('min'))} to "
                  f"{_fmt(x.get('max'))}){raw}: far from the unit scale the layers are initialised for",
                  location="input", evidence={"mean": mean, "std": std, "min": x.get("min"), "max": x.get("max"),
                                              "threshold": opts.input_scale},
                  fix="standardise each input feature (subtract the training-set mean, divide by its std); "
                      "for images, divide by 255 then normalise per channel")


@rule(code="TRN015", name="input-ignored", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK,))
def input_ignored(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    Uses Integrated Gradients (captum) on a sample input to see which input features the output
    depends on, and reports a model whose attribution is concentrated on a tiny share of its
    input: 90% of it on fewer than 5% (configurable) of the features.

    ## Why is this bad?
    A model that reads a handful of its inputs ignores the rest: often a slicing or indexing bug
    in `forward` (x[:, :2] where x[:, 2:] was meant), a mask applied the wrong way round, or a
    shortcut the model found in the data. Either the input is wasted or the model is.

    ## Example
    ```python
    def forward(self, x):           # x: (batch, 100)
        return self.fc(x[:, :2])    # reads 2 features of 100
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.fc(x)
    ```

    ## Options
    - `probe.min-attribution-coverage`: share of input features that must carry 90% of the attribution (default 0.05)
    """
    res = _probe(facts)
    att = res.attribution or {}
    cov = att.get("coverage")
    if att.get("status") != "complete" or cov is None or cov >= opts.min_attribution_coverage:
        return
    yield Hit(f"90% of the attribution falls on {cov:.1%} of the input features: the output ignores most of its input",
              location="input", evidence={"coverage": cov, "threshold": opts.min_attribution_coverage,
                                          "method": att.get("method"), "top_features": att.get("top_features")},
              fix="check the slicing, masking and indexing of the input in forward(); if it is on purpose, drop the "
                  "unused inputs")


@rule(code="TRN016", name="border-dependence", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK,))
def border_dependence(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    For image models, measures how much of the Integrated Gradients attribution falls on the
    outer border of the image (a ring 10% of the side wide) and reports a model that draws most
    of its output from there.

    ## Why is this bad?
    The border of an image rarely carries the object; a model that depends on it is reading
    padding artefacts, a frame, a watermark or a crop that leaks the label, and will fail on
    images framed differently.

    ## Example
    ```python
    def forward(self, x):
        x = x * border_mask   # only the outer ring survives
        return self.head(self.features(x))
    ```

    ## Use instead
    ```python
    def forward(self, x):
        return self.head(self.features(x))
    ```

    ## Options
    - `probe.max-border-share`: share of the attribution on the border ring (default 0.5)
    """
    res = _probe(facts)
    att = res.attribution or {}
    share, area = att.get("border_share"), att.get("border_area")
    if att.get("status") != "complete" or share is None or area is None:
        return
    if share > opts.max_border_share and share > 2 * area:
        yield Hit(f"{share:.0%} of the attribution falls on the image border, which is {area:.0%} of its area",
                  location="input", evidence={"border_share": share, "border_area": area,
                                              "threshold": opts.max_border_share, "method": att.get("method")},
                  fix="check the input pipeline for frames, padding or crops that leak the label, and the model for "
                      "masking of the centre")


@rule(code="TRN018", name="weight-decay-too-high", family="probe", severity=Severity.WARNING,
      needs=("probe",), source=(HANDBOOK,))
def weight_decay_too_high(facts: Facts, opts: ProbeOptions) -> Iterator[Hit]:
    """## What it does
    With a weight decay set (`dldoctor probe --weight-decay`, or the optimizer a watched loop uses), compares each
    weight matrix's norm at the end of the probe with its norm at the start. Reports when the median matrix kept
    less than `probe.min-weight-kept` of its norm while the loss did not fall as it should: the decay, not the
    data, is shaping the weights.

    ## Why is this bad?
    Weight decay pulls every weight towards zero a little at each step; AdamW's decoupled decay removes a share
    lr × decay of each weight per step whatever the gradient says. Set orders of magnitude too high (a decay of 1
    or 10 where 0.01 to 0.1 is usual, or the decay meant for SGD given to AdamW), it erases what the gradient
    builds: the weights shrink steadily, activations fade and the loss stays flat or rises.

    ## Example
    ```python
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=50.0)  # 5% of every weight gone per step
    ```

    ## Use instead
    ```python
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)  # 0.001% per step
    ```

    ## Options
    - `probe.min-weight-kept`: share of its starting norm the median weight matrix must keep (default 0.5)
    """
    res = _probe(facts)
    wd = res.config.get("weight_decay") or 0.0
    if _stopped(res) or not wd or len(res.loss) < 2:
        return
    kept = []
    for p in weight_params(res):
        norms = [n for n in p.weight_norm if n is not None and math.isfinite(n)]
        if len(norms) >= 2 and norms[0] > 0:
            kept.append(norms[-1] / norms[0])
    if not kept:
        return
    med = statistics.median(kept)
    drop = _loss_drop(res)
    if med >= opts.min_weight_kept or (drop is not None and drop >= opts.min_loss_drop):
        return
    lr, opt = res.config.get("lr"), res.config.get("optimizer")
    per_step = f"; AdamW removes lr × decay = {_fmt(lr * wd)} of each weight per step" if opt == "adamw" and lr else ""
    yield Hit(f"weight decay {_fmt(wd)} shrank the median weight matrix to {med:.0%} of its norm in {len(res.loss)} "
              f"steps while the loss fell {max(drop or 0, 0):.0%}{per_step}",
              location=None,
              evidence={"weight_decay": wd, "lr": lr, "optimizer": opt, "median_weight_kept": med, "loss_drop": drop,
                        "threshold": opts.min_weight_kept},
              fix="lower the weight decay (AdamW: 0.01 to 0.1; Adam's coupled L2: 1e-5 to 1e-4) or make sure the "
                  "value meant for one optimizer is not given to another")
