"""Two reports side by side: headline figures with deltas, per-layer changes, new and fixed findings.

`dldoctor diff OLD NEW` is a thin layer over `load_side` and `diff_reports`. Each side is a
model (file or factory spec) or a saved JSON report, so a pull request can be compared
against the report of the main branch without the old model at hand. Growth budgets
(`check_budgets`) turn the comparison into a CI gate. Nothing here imports torch at
module level, and nothing prints.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dldoctor.errors import LoadError
from dldoctor.report.diff_types import DIFF_KIND, BudgetCheck, Diff, LayerChange, MetricDelta  # noqa: F401 - re-exported
from dldoctor.report.figures import FIGURES, Figure, figure, growth_verdict
from dldoctor.report.types import PARTIAL, UNAVAILABLE, Finding, Report

# CLI/budget name -> the figures it limits.
GROWTH_BUDGETS: dict[str, tuple[str, ...]] = {
    "params": ("params",),
    "macs": ("macs",),
    "size": ("size",),
    "memory": ("inference_memory", "training_memory"),
}


# -- reading a side ------------------------------------------------------------------


def is_report_file(source: str) -> bool:
    """A saved JSON report: a `.json` file, or any file whose first non-blank byte is `{`."""
    p = Path(source)
    if not p.is_file():
        return False
    if p.suffix.lower() == ".json":
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def load_report_file(path: str, model_path: str | None = None) -> Report:
    """A report saved by `dldoctor inspect/check -f json`. A `{"reports": [...]}` file must hold one
    report, or one whose model path or file name matches `model_path`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise LoadError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise LoadError(f"{path}: not valid JSON ({e})", "pass a model file or a report saved with -f json") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise LoadError(f"{path}: not a dldoctor report (no schema_version)",
                        "save one with: dldoctor inspect MODEL -f json -o report.json")
    docs = doc["reports"] if "reports" in doc else [doc]
    if not isinstance(docs, list) or not docs:
        raise LoadError(f"{path}: the report file holds no reports")
    chosen = docs[0] if len(docs) == 1 else _match(docs, model_path)
    if chosen is None:
        names = ", ".join(str(d.get("model", {}).get("path")) for d in docs[:5])
        raise LoadError(f"{path}: holds {len(docs)} reports ({names}...); cannot tell which to compare",
                        "save one report per file, e.g. dldoctor inspect MODEL -f json -o report.json")
    try:
        return Report.from_dict(chosen)
    except (KeyError, TypeError, AttributeError) as e:
        raise LoadError(f"{path}: not a dldoctor report ({type(e).__name__}: {e})") from None


def _match(docs: list[dict[str, Any]], model_path: str | None) -> dict[str, Any] | None:
    if not model_path:
        return None
    want = os.path.basename(model_path)
    for d in docs:
        p = str(d.get("model", {}).get("path", ""))
        if p == model_path or os.path.basename(p) == want:
            return d
    return None


def load_side(
    source: str,
    *,
    input_shapes: list[list[int]] | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    optimizer: str = "adam",
    training: bool = True,
    load_options: Any = None,
    rules: bool = True,
    config_file: str | None = None,
    loss: str | None = None,
) -> Report:
    """A saved report, or the report of inspecting the model. With `rules`, the model is also
    judged by the rules (configuration from `config_file`, else the nearest pyproject.toml or
    dldoctor.toml) so its findings can be compared."""
    if is_report_file(source):
        return load_report_file(source)
    kwargs = dict(input_shapes=input_shapes, dtype=dtype, device=device, optimizer=optimizer,
                  training=training, load_options=load_options, loss=loss)
    if rules:
        from dldoctor.api.check import check_model
        from dldoctor.rules.config import load_config

        return check_model(source, load_config(".", config_file), **kwargs).report
    from dldoctor.api.inspect import inspect

    return inspect(source, **kwargs)


# -- the comparison ------------------------------------------------------------------


def _side(r: Report, source: str | None) -> dict[str, Any]:
    return {
        "source": source or r.model.path,  # what was named on the command line: a model or a saved report
        "path": r.model.path, "format": r.model.format, "name": r.model.name, "sha256": r.model.sha256,
        "inputs": [asdict(i) for i in r.inputs], "device": r.device,
        "errors": [d.message for d in r.diagnostics if d.level == "error"],
    }


def _metric(old: Report, new: Report, key: str) -> MetricDelta:
    o, n = figure(old, key), figure(new, key)
    delta = pct = None
    if o.value is not None and n.value is not None:
        delta = n.value - o.value
        pct = round(100.0 * delta / o.value, 4) if o.value else (0.0 if delta == 0 else None)
    return MetricDelta(key, o.label, o.unit, o.value, n.value, delta, pct, o.status, n.status)


def _rf(r: Report) -> dict[str, Any]:
    rf = r.receptive_field
    return {"status": rf.status, "size": rf.size, "global": rf.global_, "reason": rf.reason}


def _rf_diff(old: Report, new: Report) -> dict[str, Any]:
    o, n = _rf(old), _rf(new)
    delta = None
    if (o["size"] is not None and n["size"] is not None and len(o["size"]) == len(n["size"])
            and not o["global"] and not n["global"]):
        delta = [b - a for a, b in zip(o["size"], n["size"])]
    return {"old": o, "new": n, "delta": delta}


def _layers(old: Report, new: Report) -> list[LayerChange]:
    before = {lay.path: lay for lay in old.layers}
    after = {lay.path: lay for lay in new.layers}
    out: list[LayerChange] = []
    for lay in new.layers:
        prev = before.get(lay.path)
        if prev is None:
            out.append(LayerChange(lay.path, "added", type_new=lay.type, params_new=lay.params, macs_new=lay.macs,
                                   output_shape_new=lay.output_shape))
            continue
        changed = [name for name, a, b in (
            ("type", prev.type, lay.type),
            ("params", prev.params, lay.params),
            ("macs", prev.macs, lay.macs),
            ("output_shape", prev.output_shape, lay.output_shape),
        ) if a != b]
        if changed:
            out.append(LayerChange(lay.path, "changed", prev.type, lay.type, prev.params, lay.params, prev.macs,
                                   lay.macs, prev.output_shape, lay.output_shape, changed))
    for lay in old.layers:
        if lay.path not in after:
            out.append(LayerChange(lay.path, "removed", type_old=lay.type, params_old=lay.params, macs_old=lay.macs,
                                   output_shape_old=lay.output_shape))
    return out


def finding_key(f: Finding) -> tuple[str, str]:
    return (f.code, f.location or "")


def diff_reports(old: Report, new: Report, old_source: str | None = None, new_source: str | None = None) -> Diff:
    """Compare two reports. Findings are matched by (code, location); `*_source` name where each side came from."""
    notes: list[str] = []
    shapes_old, shapes_new = [i.shape for i in old.inputs], [i.shape for i in new.inputs]
    if shapes_old and shapes_new and shapes_old != shapes_new:
        notes.append(f"the two sides were measured on different inputs ({_shapes(shapes_old)} vs {_shapes(shapes_new)}): "
                     "MACs and memory are not like for like; pass --input-shape")
    if old.memory.optimizer != new.memory.optimizer and (old.memory.training_peak_bytes and new.memory.training_peak_bytes):
        notes.append(f"training memory assumes {old.memory.optimizer} for OLD and {new.memory.optimizer} for NEW")
    layers: list[LayerChange] = []
    if (old.layers and not new.layers) or (new.layers and not old.layers):
        notes.append("only one side has a layer table (a weights-only file on the other): layer changes are not compared")
    elif (old.model.format == "onnx") != (new.model.format == "onnx"):
        notes.append("one side is an ONNX graph and the other a torch module: their layers are named differently, "
                     "so layer changes are not compared")
    else:
        layers = _layers(old, new)
    compared = bool(old.findings or new.findings)
    before = {finding_key(f) for f in old.findings}
    after = {finding_key(f) for f in new.findings}
    new_f = [f for f in new.findings if finding_key(f) not in before]
    fixed = [f for f in old.findings if finding_key(f) not in after]
    return Diff(
        old=_side(old, old_source), new=_side(new, new_source),
        metrics=[_metric(old, new, k) for k in FIGURES],
        receptive_field=_rf_diff(old, new),
        layers=layers,
        findings_compared=compared,
        new_findings=new_f,
        fixed_findings=fixed,
        notes=notes,
    )


def _shapes(shapes: list[list[int]]) -> str:
    return ", ".join("x".join(str(d) for d in s) for s in shapes)


# -- growth budgets ------------------------------------------------------------------


def check_budgets(
    diff: Diff,
    old: Report,
    new: Report,
    *,
    max_growth: dict[str, float | None] | None = None,
    fail_on_new_findings: bool = False,
) -> list[BudgetCheck]:
    """Fill `diff.budgets`; `diff.violations` are the ones that fail CI."""
    checks: list[BudgetCheck] = []
    for budget, limit in (max_growth or {}).items():
        if limit is None:
            continue
        for key in GROWTH_BUDGETS[budget]:
            o, n = figure(old, key), figure(new, key)
            verdict = growth_verdict(o, n, limit)
            m = diff.metric(key)
            grew = "n/a" if m.change_pct is None else f"{m.change_pct:+.1f}%"
            if verdict == "unavailable":
                why = (o if o.status == UNAVAILABLE else n).reason
                side = "OLD" if o.status == UNAVAILABLE else "NEW"
                msg = f"{o.label}: growth limit {limit:+.1%} not checked, unavailable for {side} ({why})"
            elif verdict == "exceeded":
                lower = " (NEW is a lower bound: at least this)" if n.status == PARTIAL else ""
                msg = f"{o.label} grew {grew} ({_num(o, o.value)} -> {_num(n, n.value)}), over the {limit:+.1%} allowed{lower}"
            elif verdict == "unconfirmed":
                bound = (n if n.status == PARTIAL else o)
                msg = (f"{o.label} changed {grew}; limit {limit:+.1%} cannot be confirmed: "
                       f"{'NEW' if bound is n else 'OLD'} is a lower bound ({bound.reason})")
            else:
                msg = f"{o.label} changed {grew}, within the {limit:+.1%} allowed"
            checks.append(BudgetCheck(budget, limit, key, verdict, msg))
    if fail_on_new_findings:
        if diff.new_findings:
            listed = ", ".join(f"{f.code}" + (f" at {f.location}" if f.location else "") for f in diff.new_findings[:5])
            more = f" and {len(diff.new_findings) - 5} more" if len(diff.new_findings) > 5 else ""
            checks.append(BudgetCheck("new-findings", None, None, "exceeded",
                                      f"{len(diff.new_findings)} new finding(s): {listed}{more}"))
        else:
            checks.append(BudgetCheck("new-findings", None, None, "ok", "no new findings"))
    diff.budgets = checks
    return checks


def _num(fig: Figure, n: int | None) -> str:
    from dldoctor.report.units import nbytes, si

    return nbytes(n) if fig.unit == "bytes" else si(n)


def parse_growth(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05, '-10%' -> -0.10 (must shrink 10%)."""
    t = text.strip()
    try:
        if t.endswith("%"):
            return float(t[:-1].strip()) / 100.0
        return float(t)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a growth: write 5% or 0.05") from None
