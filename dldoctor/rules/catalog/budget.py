"""Budgets: hard ceilings on size and cost, absolute or relative to a saved baseline report.

A budget that is not set is silent. A figure that could not be measured, or was
only partly counted, is said to be so: a budget is never passed on a number we do
not have. A partial count (a lower bound) that already exceeds its budget still fails.
"""
from __future__ import annotations

from typing import Iterator

from dldoctor.report.figures import Figure, figure, growth_verdict
from dldoctor.report.units import nbytes, si
from dldoctor.report.facts import Facts
from dldoctor.rules.options import BudgetOptions
from dldoctor.rules.registry import Hit, rule
from dldoctor.rules.seeds import ARCHITECTURE, HANDBOOK
from dldoctor.report.types import PARTIAL, UNAVAILABLE, Report, Severity

# Seeds (dldoctor/rules/seeds.py) and the tips these rules draw from each:
#   ARCHITECTURE: "Quantization and Model Compression"; resources drive model choice
#   HANDBOOK: training with limited GPU memory; fp16/bf16 to cut memory

_FIX = {
    "params": "make the widest layers narrower, share weights, or use depthwise-separable convolutions",
    "macs": "lower the input resolution, narrow the costliest layers, or use depthwise-separable convolutions",
    "flops": "lower the input resolution, narrow the costliest layers, or use depthwise-separable convolutions",
    "size": "store the weights in fewer bits (int8 quantization shrinks fp32 weights about 4x, fp16 2x) or prune",
    "inference_memory": "run in fp16/bf16, lower the batch size or input resolution",
    "training_memory": "lower the batch size and accumulate gradients, train in bf16/fp16, "
                       "or checkpoint activations",
}
# the `dldoctor compress` transform a finding names (the other int8 and fp16 variants declare `fixes=` these codes)
_TRANSFORM = {"size": "onnx-int8-dynamic", "inference_memory": "onnx-fp16"}


def _fmt(fig_or_unit: Figure | str, n: float | None) -> str:
    unit = fig_or_unit.unit if isinstance(fig_or_unit, Figure) else fig_or_unit
    if n is None:
        return "n/a"
    return nbytes(int(n)) if unit == "bytes" else si(n)


def _ratio(value: int, budget: float) -> float | None:
    return round(value / budget, 4) if budget else None


def _absolute(report: Report, key: str, budget: int | None, option: str) -> Iterator[Hit]:
    if budget is None:
        return
    fig = figure(report, key)
    shown = _fmt(fig, budget)
    if fig.status == UNAVAILABLE:
        yield Hit(
            f"{fig.label} could not be checked against its budget of {shown} (`budget.{option}`): {fig.reason}",
            evidence={"value": None, "budget": budget, "ratio": None, "status": UNAVAILABLE},
            severity=Severity.INFO,
            fix="give the model an architecture and an example input (--arch, --input-shape) so the figure can be measured",
        )
        return
    assert fig.value is not None
    evidence = {"value": fig.value, "budget": budget, "ratio": _ratio(fig.value, budget), "status": fig.status}
    if fig.value > budget:
        lower = "at least " if fig.status == PARTIAL else ""
        times = f" ({evidence['ratio']:.2f}x)" if evidence["ratio"] else ""
        note = f"; the count is a lower bound ({fig.reason})" if fig.status == PARTIAL else ""
        yield Hit(
            f"{fig.label}: {lower}{_fmt(fig, fig.value)}, over the budget of {shown}{times}{note}",
            evidence=evidence,
            fix=_FIX[key],
            transform=_TRANSFORM.get(key),
        )
    elif fig.status == PARTIAL:
        yield Hit(
            f"{fig.label}: {_fmt(fig, fig.value)} counted, within the budget of {shown}, but the count is only a "
            f"lower bound ({fig.reason}), so the budget cannot be confirmed",
            evidence=evidence,
            severity=Severity.INFO,
        )


def _shape(report: Report) -> str:
    return ", ".join("x".join(str(d) for d in i.shape) for i in report.inputs) or "?"


def _relative(facts: Facts, keys: tuple[str, ...], max_growth: float | None, option: str) -> Iterator[Hit]:
    if max_growth is None:
        return
    base = facts.baseline
    allowed = f"{max_growth:+.1%}"
    if base is None:
        why = facts.why_missing("baseline")
        yield Hit(f"`budget.{option}` ({allowed}) could not be checked: {why}",
                  evidence={"max_growth": max_growth}, severity=Severity.INFO)
        return
    inputs = ""
    if base.inputs and facts.report.inputs and [i.shape for i in base.inputs] != [i.shape for i in facts.report.inputs]:
        inputs = f" (note: the baseline was measured on input {_shape(base)}, this model on {_shape(facts.report)})"
    for key in keys:
        new, old = figure(facts.report, key), figure(base, key)
        verdict = growth_verdict(old, new, max_growth)
        if verdict == "unavailable":
            side, fig = ("this model", new) if new.status == UNAVAILABLE else ("the baseline", old)
            yield Hit(
                f"{new.label} growth could not be checked against `budget.{option}` ({allowed}): "
                f"unavailable for {side} ({fig.reason})",
                evidence={"value": new.value, "baseline": old.value, "max_growth": max_growth},
                severity=Severity.INFO,
            )
            continue
        if verdict == "ok":
            continue
        assert new.value is not None and old.value is not None
        growth = (new.value - old.value) / old.value if old.value else (0.0 if new.value == 0 else None)
        evidence = {
            "value": new.value, "baseline": old.value, "budget": int(old.value * (1 + max_growth)),
            "ratio": _ratio(new.value, old.value), "growth": None if growth is None else round(growth, 4),
            "max_growth": max_growth, "status": new.status, "baseline_status": old.status,
        }
        grew = "from 0" if growth is None else f"{growth:+.1%}"
        change = f"{_fmt(new, old.value)} -> {_fmt(new, new.value)}"
        if verdict == "exceeded":
            lower = "; this model's count is a lower bound, so the growth is at least this" if new.status == PARTIAL else ""
            yield Hit(
                f"{new.label} grew {grew} against the baseline ({change}), more than the {allowed} allowed{lower}{inputs}",
                evidence=evidence, fix=_FIX[key], transform=_TRANSFORM.get(key),
            )
        elif new.value > old.value * (1 + max_growth):  # unconfirmed: the baseline is a lower bound
            yield Hit(
                f"{new.label} may have grown more than the {allowed} allowed ({change}, {grew}), but the baseline's "
                f"count is a lower bound ({old.reason}), so the growth cannot be confirmed{inputs}",
                evidence=evidence, severity=Severity.INFO,
            )
        else:  # unconfirmed: this model's count is a lower bound
            yield Hit(
                f"{new.label} is within the {allowed} allowed ({change}, {grew}) as counted, but this model's count is "
                f"a lower bound ({new.reason}), so the budget cannot be confirmed{inputs}",
                evidence=evidence, severity=Severity.INFO,
            )


# -- absolute budgets ---------------------------------------------------------


@rule(code="BUD001", name="params-over-budget", family="budget", severity=Severity.ERROR, source=ARCHITECTURE)
def params_over_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the model has more parameters than `budget.max-params` allows.

    ## Why is this bad?
    The target hardware and the resources at hand should drive the choice of model. A parameter
    count over the agreed ceiling means a model that no longer fits the device, the download or
    the serving cost it was planned for; catching it in CI stops the growth before it ships.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    max-params = 1_000_000
    ```
    A model with 1.4 M parameters fails: `parameters: 1.40 M, over the budget of 1.00 M (1.40x)`.

    ## Use instead
    Narrow the widest layers, share weights between layers, or replace standard convolutions with
    depthwise-separable ones; or raise the budget on purpose, in review.

    ## Options
    - `budget.max-params`: the largest parameter count allowed (shared parameters counted once); unset = no budget.
    """
    yield from _absolute(facts.report, "params", opts.max_params, "max-params")


@rule(code="BUD002", name="macs-over-budget", family="budget", severity=Severity.ERROR, source=ARCHITECTURE)
def macs_over_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when one forward pass on the example input costs more multiply-accumulates than
    `budget.max-macs` allows. A partial count (ops without a formula) that already exceeds the
    budget fails too; one that stays under it is reported as unconfirmed, and a count that could
    not be made at all is reported as unchecked.

    ## Why is this bad?
    Inference latency and energy follow the compute of a forward pass. A model over its MAC
    budget misses the latency target it was chosen for, however accurate it is.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    max-macs = 600_000_000   # MobileNet-class, at 224x224
    ```
    A ResNet-50 (4.1 G MACs) fails at about 6.8x the budget.

    ## Use instead
    Lower the input resolution, narrow the costliest layers (the layer table shows each layer's
    share), or use depthwise-separable convolutions; then quantize for a faster runtime.

    ## Options
    - `budget.max-macs`: the most multiply-accumulates one forward pass may cost on the example input; unset = no budget.
    """
    yield from _absolute(facts.report, "macs", opts.max_macs, "max-macs")


@rule(code="BUD003", name="model-size-over-budget", family="budget", severity=Severity.ERROR, source=ARCHITECTURE)
def model_size_over_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the weights and buffers take more bytes than `budget.max-size-bytes` allows.

    ## Why is this bad?
    Model size is what a phone app, an edge device or a cold-starting server has to download and
    hold. Compression exists precisely to bring it down; a model over its size budget will not fit
    where it is meant to run.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    max-size-bytes = 20_000_000
    ```
    An fp32 model with 10 M parameters (40 MB) fails at 2x the budget.

    ## Use instead
    Store the weights in fewer bits: int8 quantization shrinks fp32 weights about 4x and fp16 2x
    (`dldoctor compress -t onnx-int8-dynamic`); prune weights that contribute little; or use a smaller architecture.

    ## Options
    - `budget.max-size-bytes`: the most bytes parameters plus buffers may take; unset = no budget.
    """
    yield from _absolute(facts.report, "size", opts.max_size_bytes, "max-size-bytes")


@rule(code="BUD004", name="inference-memory-over-budget", family="budget", severity=Severity.ERROR, source=(ARCHITECTURE, HANDBOOK))
def inference_memory_over_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the peak memory of one inference pass (weights, inputs and the largest set of
    activations alive at once) exceeds `budget.max-inference-memory-bytes`. When the pass could not
    be measured the budget is reported as unchecked.

    ## Why is this bad?
    A model whose inference peak is over the device's memory does not run there at all, or only
    with swapping; the figure grows with the batch size and the input resolution.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    max-inference-memory-bytes = 268_435_456   # 256 MiB
    ```
    A model that peaks at 400 MiB on the example input fails at about 1.56x the budget.

    ## Use instead
    Run in fp16/bf16 (half the weight and activation bytes), lower the batch size or the input
    resolution, or downsample earlier so the large activations are short-lived.

    ## Options
    - `budget.max-inference-memory-bytes`: the most bytes one inference pass may hold at its peak, on the example input; unset = no budget.
    """
    yield from _absolute(facts.report, "inference_memory", opts.max_inference_memory_bytes, "max-inference-memory-bytes")


@rule(code="BUD005", name="training-memory-over-budget", family="budget", severity=Severity.ERROR, source=HANDBOOK)
def training_memory_over_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the estimated peak memory of one training step (weights, saved activations,
    gradients and optimizer state) exceeds `budget.max-training-memory-bytes`. When the training
    pass could not be measured the budget is reported as unchecked.

    ## Why is this bad?
    A training step that does not fit in GPU memory stops with an out-of-memory error. Knowing it
    before the job is queued saves a failed run and points at the cheapest way to fit.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    max-training-memory-bytes = 17_179_869_184   # a 16 GiB GPU
    ```
    A model whose Adam step needs 22 GiB at the configured batch size fails.

    ## Use instead
    Lower the batch size and accumulate gradients over several steps to keep the effective batch,
    train in bf16/fp16, checkpoint activations, or pick an optimizer with less state (SGD keeps one
    buffer per parameter, Adam two).

    ## Options
    - `budget.max-training-memory-bytes`: the most bytes one training step may hold at its peak, on the example input and optimizer; unset = no budget.
    """
    yield from _absolute(facts.report, "training_memory", opts.max_training_memory_bytes, "max-training-memory-bytes")


# -- relative budgets (against a baseline report) ----------------------------


@rule(code="BUD006", name="params-grew-past-budget", family="budget", severity=Severity.ERROR, source=ARCHITECTURE)
def params_grew_past_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the parameter count grew more than `budget.max-params-growth` against the baseline
    report (`budget.baseline-report`), e.g. the report of the model on the main branch.

    ## Why is this bad?
    Models grow a little with each change, and no single pull request looks guilty. A growth
    budget against a saved baseline makes each increase a decision, taken in review with the number
    in front of the reviewer.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    baseline-report = "baseline.json"   # dldoctor inspect model.pt -f json -o baseline.json
    max-params-growth = 0.05            # may grow 5%
    ```
    A change that takes the model from 1.00 M to 1.12 M parameters fails: `+12.0%`, over the `+5.0%` allowed.

    ## Use instead
    Keep the change within the budget (narrower new layers, shared weights), or refresh the
    baseline report in the same pull request so the growth is approved explicitly.

    ## Options
    - `budget.max-params-growth`: the largest allowed growth of the parameter count, as a fraction (0.05 = 5%); unset = not checked.
    - `budget.baseline-report`: the JSON report the growth is measured against.
    """
    yield from _relative(facts, ("params",), opts.max_params_growth, "max-params-growth")


@rule(code="BUD007", name="macs-grew-past-budget", family="budget", severity=Severity.ERROR, source=ARCHITECTURE)
def macs_grew_past_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the MACs of one forward pass grew more than `budget.max-macs-growth` against the
    baseline report. Partial counts are reported as unconfirmed rather than passed.

    ## Why is this bad?
    Latency creeps up one change at a time. A relative compute budget keeps the model at the speed
    it was accepted at, and says which change made it slower.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    baseline-report = "baseline.json"
    max-macs-growth = 0.05
    ```
    Widening a stage so that a forward pass goes from 1.8 G to 2.1 G MACs fails at `+16.7%`.

    ## Use instead
    Recover the compute elsewhere (depthwise-separable convolutions, earlier downsampling), or
    refresh the baseline report in the same pull request when the cost is accepted.

    ## Options
    - `budget.max-macs-growth`: the largest allowed growth of the MAC count, as a fraction (0.05 = 5%); unset = not checked.
    - `budget.baseline-report`: the JSON report the growth is measured against.
    """
    yield from _relative(facts, ("macs",), opts.max_macs_growth, "max-macs-growth")


@rule(code="BUD008", name="model-size-grew-past-budget", family="budget", severity=Severity.ERROR, source=ARCHITECTURE)
def model_size_grew_past_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the bytes of parameters plus buffers grew more than `budget.max-size-growth` against
    the baseline report. It also catches a change of storage dtype (fp16 weights back to fp32)
    that leaves the parameter count unchanged.

    ## Why is this bad?
    Size is what ships to devices and what compression was applied to reduce. A silent return to
    fp32, or a new embedding table, can double it without any other figure moving much.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    baseline-report = "baseline.json"
    max-size-growth = 0.05
    ```
    A checkpoint saved in fp32 after the baseline was fp16 fails at `+100.0%`.

    ## Use instead
    Save the weights in the precision the baseline used, quantize new layers too, or refresh the
    baseline report in the same pull request when the growth is accepted.

    ## Options
    - `budget.max-size-growth`: the largest allowed growth of parameter-plus-buffer bytes, as a fraction (0.05 = 5%); unset = not checked.
    - `budget.baseline-report`: the JSON report the growth is measured against.
    """
    yield from _relative(facts, ("size",), opts.max_size_growth, "max-size-growth")


@rule(code="BUD009", name="memory-grew-past-budget", family="budget", severity=Severity.ERROR, source=(ARCHITECTURE, HANDBOOK))
def memory_grew_past_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Fails when the peak inference memory or the peak training-step memory grew more than
    `budget.max-memory-growth` against the baseline report (one finding per figure).

    ## Why is this bad?
    Memory decides whether the model still fits the GPU it trains on and the device it serves on,
    at the same batch size. Growth there turns into out-of-memory errors or a smaller batch later.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    baseline-report = "baseline.json"
    max-memory-growth = 0.10
    ```
    Removing a downsampling step early in a CNN can double the activation memory with the
    parameter count unchanged; it fails here.

    ## Use instead
    Keep large activations short-lived (downsample early), train in bf16/fp16 or checkpoint
    activations, or refresh the baseline report in the same pull request when the cost is accepted.

    ## Options
    - `budget.max-memory-growth`: the largest allowed growth of the inference and the training peak, as a fraction (0.10 = 10%); unset = not checked.
    - `budget.baseline-report`: the JSON report the growth is measured against.
    """
    yield from _relative(facts, ("inference_memory", "training_memory"), opts.max_memory_growth, "max-memory-growth")


@rule(code="BUD010", name="latency-over-budget", family="budget", severity=Severity.ERROR, needs=("profile",),
      source=ARCHITECTURE)
def latency_over_budget(facts: Facts, opts: BudgetOptions) -> Iterator[Hit]:
    """## What it does
    Compares the measured median latency (p50) of one forward pass at `budget.latency-batch-size` on
    `budget.latency-device` with `budget.max-latency-ms`. The profile comes from `dldoctor profile`
    or `dldoctor check --profile`; a profile taken on another device or without that batch size is
    said to be so, never passed.

    ## Why is this bad?
    A serving budget is a promise to users: a pull request that makes the model slower than the
    budget should fail before it ships, with the measurement that shows it.

    ## Example
    ```toml
    [tool.dldoctor.budget]
    max-latency-ms = 5.0        # the model measures 7.9 ms at batch 1 on this CPU
    ```

    ## Use instead
    ```toml
    [tool.dldoctor.budget]
    max-latency-ms = 10.0       # or make the model faster: see the PRF findings of dldoctor profile
    ```

    ## Options
    - `budget.max-latency-ms`: the budget in milliseconds (default: none)
    - `budget.latency-batch-size`: the batch size it applies to (default 1)
    - `budget.latency-device`: the device it applies to (default cpu)
    """
    if opts.max_latency_ms is None:
        return
    prof = facts.profile
    dev = str(prof.config.get("device", "cpu"))
    stats = prof.at(opts.latency_batch_size)
    if dev != opts.latency_device or stats is None or stats.p50 is None:
        why = (f"the profile ran on {dev}, the budget is for {opts.latency_device}" if dev != opts.latency_device
               else f"batch size {opts.latency_batch_size} was not measured"
               + (f" ({stats.error})" if stats is not None and stats.error else ""))
        yield Hit(f"latency budget {opts.max_latency_ms:g} ms not checked: {why}", severity=Severity.WARNING,
                  evidence={"budget_ms": opts.max_latency_ms, "device": dev},
                  fix=f"profile with --device {opts.latency_device} --batch-sizes {opts.latency_batch_size}")
        return
    ms = stats.p50 * 1e3
    if ms > opts.max_latency_ms:
        noisy = " (the timings are noisy: cv {:.2f})".format(stats.cv) if stats.noisy and stats.cv is not None else ""
        yield Hit(f"p50 latency {ms:.3g} ms at batch {stats.batch_size} on {dev} exceeds the {opts.max_latency_ms:g} ms "
                  f"budget ({ms / opts.max_latency_ms:.2f}×){noisy}",
                  evidence={"p50_ms": ms, "p90_ms": None if stats.p90 is None else stats.p90 * 1e3,
                            "budget_ms": opts.max_latency_ms, "batch_size": stats.batch_size, "device": dev,
                            "cv": stats.cv, "iters": stats.iters},
                  fix="see the measured what-ifs of dldoctor profile (channels_last, bf16, ONNX Runtime, ...), or "
                      "narrow the costliest layers")
