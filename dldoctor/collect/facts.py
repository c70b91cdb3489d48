"""Collect the facts the rules judge, from a report and (when there is one) the module."""
from __future__ import annotations

from typing import Any

from dldoctor.report.facts import MISSING_REASONS, Facts, TrainingInfo, normalise_loss
from dldoctor.report.types import Report

def build_facts(
    report: Report,
    module: Any = None,
    loss: str | None = None,
    dataset_size: int | None = None,
    baseline: Report | None = None,
) -> Facts:
    """Facts for the rules: a fact that cannot be collected stays None with the reason in `missing`
    (MISSING_REASONS' sentence, or a more specific one when this knows why)."""
    facts = Facts(report=report, loss=normalise_loss(loss), onnx=report.onnx)
    if hasattr(facts, "baseline"):
        facts.baseline = baseline
    if facts.loss is None:
        facts.missing["loss"] = MISSING_REASONS["loss"]
    facts.probe = report.probe
    if facts.probe is None:
        facts.missing["probe"] = MISSING_REASONS["probe"]
    facts.profile = report.profile
    if facts.profile is None:
        facts.missing["profile"] = MISSING_REASONS["profile"]
    if report.onnx is None:
        facts.missing["onnx"] = MISSING_REASONS["onnx"]
    if module is None:
        if report.model.format == "onnx":
            why = "an ONNX graph, not a PyTorch module"
        else:
            why = report.flops.reason or f"a {report.model.format} file holds no module"
        for name in ("graph", "weights", "training"):
            facts.missing[name] = why
        return facts

    from dldoctor.collect.inputs import from_infos
    from dldoctor.collect.weights import weight_stats

    facts.training = TrainingInfo(
        frozen=[n for n, p in module.named_parameters() if not p.requires_grad],
        trainable=[n for n, p in module.named_parameters() if p.requires_grad],
        dataset_size=dataset_size,
    )
    facts.weights = weight_stats(module)
    if facts.weights is None:
        facts.missing["weights"] = "weights are not materialised (meta device)"
    failed = [d.message for d in report.diagnostics if d.level == "error"]
    if not report.inputs:
        facts.missing["graph"] = "no example input (pass --input-shape)"
    elif failed:
        facts.missing["graph"] = f"the forward pass failed: {failed[0]}"
    else:
        from dldoctor.collect.graph import collect_graph

        try:
            from dldoctor.collect.torch_model import pass_device

            device = pass_device(module, from_infos(module, report.inputs), report.device or "cpu")
            facts.graph = collect_graph(module, from_infos(module, report.inputs), device=device)
        except Exception as e:  # noqa: BLE001 - a model that cannot be traced on meta is retried for real
            try:
                dev = report.device if report.device in ("cpu", "cuda") else "cpu"
                facts.graph = collect_graph(module, from_infos(module, report.inputs), device=dev)
            except Exception:  # noqa: BLE001
                facts.missing["graph"] = f"the graph could not be traced: {type(e).__name__}: {str(e)[:200]}"
    return facts
