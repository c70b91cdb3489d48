"""`dldoctor diff OLD NEW`: two models (or a model and a saved report) side by side, with growth budgets."""
from __future__ import annotations

from typing import List, Optional

import typer

from dldoctor.cli.common import check_format, emit_rendered, error_line, fail, handle_errors
from dldoctor.cli.options import (AllowClass, Code, ConfigFile, DiffArch, DiffDevice, DiffDtype, DiffFormat, DiffInputShape, DiffOutput, Limit, Loss,
                                  Quiet, Trust, load_options, parse_shapes, warn_if_trusted)

GROWTH_HELP = "Fail (exit 1) when {what} grows more than this against OLD: 5% or 0.05 (a negative value demands a shrink)."


def _growth(text: Optional[str], flag: str) -> Optional[float]:
    if text is None:
        return None
    from dldoctor.api.diff import parse_growth

    try:
        return parse_growth(text)
    except ValueError as e:
        fail(f"{flag}: {e}", "write a percentage (5%) or a fraction (0.05)")
    return None  # unreachable: fail() raises


def _failed(report: object) -> bool:
    return any(d.level == "error" for d in getattr(report, "diagnostics", []))


def register(app: typer.Typer) -> None:
    @app.command("diff")
    @handle_errors
    def diff_cmd(
        old: str = typer.Argument(..., help="The baseline: a model file, a factory spec, or a JSON report saved with -f json."),
        new: str = typer.Argument(..., help="The candidate: a model file, a factory spec, or a JSON report."),
        input_shape: DiffInputShape = None,
        dtype: DiffDtype = None,
        device: DiffDevice = "cpu",
        arch: DiffArch = None,
        allow_class: AllowClass = None,
        code: Code = None,
        trust: Trust = False,
        limit: Limit = None,
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help="Optimizer for training memory: sgd, adam, adamw or none. Default: a report side's, else adam."),
        no_training: bool = typer.Option(False, "--no-training", help="Skip the training-step pass on model sides."),
        loss: Loss = None,
        rules: bool = typer.Option(True, "--rules/--no-rules", help="Run the rules on model sides so new and fixed findings can be compared."),
        config_file: ConfigFile = None,
        max_params_growth: Optional[str] = typer.Option(None, "--max-params-growth", help=GROWTH_HELP.format(what="the parameter count")),
        max_macs_growth: Optional[str] = typer.Option(None, "--max-macs-growth", help=GROWTH_HELP.format(what="the MAC count")),
        max_size_growth: Optional[str] = typer.Option(None, "--max-size-growth", help=GROWTH_HELP.format(what="the model size (params + buffers bytes)")),
        max_memory_growth: Optional[str] = typer.Option(None, "--max-memory-growth", help=GROWTH_HELP.format(what="the inference or training memory peak")),
        fail_on_new_findings: bool = typer.Option(False, "--fail-on-new-findings", help="Fail (exit 1) when NEW has findings OLD did not have (matched by code and location)."),
        fmt: DiffFormat = "rich",
        output: DiffOutput = None,
        quiet: Quiet = False,
    ) -> None:
        """Compare two models, or a model and a saved report: figures, layers and findings, with deltas.

        Exit 0 when every growth budget holds, 1 when one is exceeded (the reason on stderr), 2 when a side cannot be loaded or run.
        """
        check_format("diff", fmt)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [old, new, *(code or ()), config_file])
        from dldoctor.rules.config import load_config

        # a flag overrides the growth budget of [tool.dldoctor.budget]; the file's applies otherwise
        budget = load_config(".", config_file).budget
        growth = {
            "params": _growth(max_params_growth, "--max-params-growth"),
            "macs": _growth(max_macs_growth, "--max-macs-growth"),
            "size": _growth(max_size_growth, "--max-size-growth"),
            "memory": _growth(max_memory_growth, "--max-memory-growth"),
        }
        growth = {k: v if v is not None else getattr(budget, f"max_{k}_growth") for k, v in growth.items()}
        from rich.console import Console

        from dldoctor.api.diff import check_budgets, diff_reports, is_report_file, load_report_file, load_side
        from dldoctor.errors import InputSpecError
        from dldoctor.render.text import markup

        err = Console(stderr=True, quiet=quiet)
        # Both sides are measured alike unless told otherwise: a model side takes the input and optimizer of a
        # saved report, else NEW takes OLD's input; a model that cannot run on a borrowed input uses its own guess.
        saved = {s: load_report_file(s) for s in (old, new) if is_report_file(s)}
        reports = dict(saved)
        ref_src = next(iter(saved), None)
        ref = saved.get(ref_src) if ref_src else None
        user_shapes = parse_shapes(input_shape)
        opt = optimizer or (ref.memory.optimizer if ref is not None else None) or "adam"
        opts = None
        if len(saved) < 2:
            opts = load_options(trust, allow_class, code, arch, device, limit=limit)
            warn_if_trusted(err, trust)
        notes: list[str] = []
        for s in (old, new):
            if s in reports:
                continue
            kw = dict(device=device, optimizer=opt, training=not no_training, load_options=opts, rules=rules,
                      config_file=config_file, loss=loss)
            shapes, dt, lender = user_shapes, dtype, None
            if shapes is None and ref is not None and ref.inputs:
                from dldoctor.collect.inputs import InputSpec

                # each borrowed input keeps its own name and dtype (--dtype, when given, sets them all)
                shapes = [InputSpec(tuple(i.shape), dtype or i.dtype, i.name) for i in ref.inputs]
                dt, lender = dtype, ref_src
            with err.status(f"inspecting {markup(s)}", spinner="dots"):
                try:
                    rep = load_side(s, input_shapes=shapes, dtype=dt, **kw)
                except InputSpecError:
                    if not lender:
                        raise
                    rep = None
                if lender and (rep is None or _failed(rep)):
                    own = load_side(s, input_shapes=None, dtype=dtype, **kw)
                    if rep is None or not _failed(own):
                        notes.append(f"{s} cannot run on the input of {lender}; it was measured on its own example input")
                        rep = own
            reports[s] = rep
            if ref is None and not _failed(rep):
                ref, ref_src = rep, s
        a, b = reports[old], reports[new]
        diff = diff_reports(a, b, old, new)
        for label, src, rep in (("OLD", old, a), ("NEW", new, b)):
            if diff.findings_compared and src in saved and not rep.findings:
                notes.append(f"{label} is a saved report without findings: if it was saved without running the rules, "
                             f"every finding of the other side shows as {'new' if label == 'OLD' else 'fixed'}")
        diff.notes[:0] = notes
        check_budgets(diff, a, b, max_growth=growth, fail_on_new_findings=fail_on_new_findings)

        emit_rendered("diff", fmt, diff, output)

        for b_ in diff.unchecked:
            error_line(b_.message, prefix="warning")
        # A model side whose forward pass failed is an error, as in `inspect`; a saved report's old errors are not.
        errors = [f"{label}: {m}" for label, src, side in (("OLD", old, diff.old), ("NEW", new, diff.new))
                  if src not in saved for m in side["errors"]]
        if errors:
            for line in errors:
                error_line(line)
            raise typer.Exit(2)
        if diff.violations:
            for v in diff.violations:
                error_line(v.message, prefix="budget exceeded")
            raise typer.Exit(1)
