"""`dldoctor probe`: a short training run on a deep copy that diagnoses the training dynamics."""
from __future__ import annotations

from typing import List, Optional

import typer

from dldoctor.cli.common import (deadline, emit_report_and_exit, fail, handle_errors, max_input_bytes_option,
                                 parse_max_input_bytes)
from dldoctor.cli.options import TRUST_HELP

PROBE_FORMATS = ("rich", "json", "html")


def register(app: typer.Typer) -> None:
    @app.command("probe")
    @handle_errors
    def probe_cmd(
        model: str = typer.Argument(..., help="A model file or a factory spec such as mypkg.models:build(depth=18)."),
        loss: Optional[str] = typer.Option(None, "--loss", help="ce, nll, bce, bce_logits, mse, l1 or huber (default: ce for a classifier head, mse otherwise)."),
        optimizer: str = typer.Option("adam", "--optimizer", help="sgd (momentum 0.9), adam or adamw."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: adam/adamw 3e-3, sgd 5e-2)."),
        steps: int = typer.Option(60, "--steps", help="Training steps."),
        batch_size: int = typer.Option(16, "--batch-size", "-b", help="Samples in the synthetic batch."),
        seed: int = typer.Option(0, "--seed", help="Random seed (the run is deterministic under it)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        data: Optional[str] = typer.Option(None, "--data", help="pkg.mod:batches, a function returning an iterable of (x, y) batches (your own data; it also checks the inputs)."),
        input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help="Input shape, e.g. 16,3,32,32 (the first dimension is the batch). Guessed when absent."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="Input dtype (float32, int64...)."),
        arch: Optional[str] = typer.Option(None, "--arch", help="pkg.mod:factory that builds the module for a state_dict or safetensors file."),
        allow_class: Optional[List[str]] = typer.Option(None, "--allow-class", help="Allow this class (pkg.mod.Cls) in a pickled model; repeatable."),
        code: Optional[List[str]] = typer.Option(None, "--code", help="A module (name or .py path) whose classes a pickled model may use; repeatable."),
        trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
        no_attribution: bool = typer.Option(False, "--no-attribution", help="Skip the captum attributions."),
        fmt: str = typer.Option("rich", "--format", "-f", help="rich, json, or html (one self-contained page with plots; use -o)."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the report to this file (atomically)."),
        select: Optional[List[str]] = typer.Option(None, "--select", help="Only these rules (codes, prefixes, names)."),
        ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Leave these rules out."),
        fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Exit 1 when a finding reaches this severity: error (default), warning, info, never."),
        config_file: Optional[str] = typer.Option(None, "--config", help="Configuration file (default: the nearest pyproject.toml / dldoctor.toml)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds with exit 2 (a model whose forward hangs)."),
        max_input_bytes: str = max_input_bytes_option(),
    ) -> None:
        """Train a deep copy for a few dozen steps and diagnose vanishing/exploding gradients, dead units,
        saturation, NaN, stuck weights, a loss that cannot fall, learning-rate and loss/head mistakes.

        Exit 0 when no finding reaches --fail-on, 1 when one does, 2 when the model cannot be loaded or run.
        """
        if fmt not in PROBE_FORMATS:
            fail(f"unknown format {fmt!r}", f"use one of: {', '.join(PROBE_FORMATS)}")
        if device not in ("cpu", "cuda"):
            fail(f"unknown device {device!r}", "the probe trains for real: use cpu or cuda")
        budget = parse_max_input_bytes(max_input_bytes)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [model, *(code or ()), config_file])
        from dldoctor.cli.options import load_cli_config

        config = load_cli_config(config_file, select, None, ignore, fail_on)
        from rich.console import Console

        from dldoctor.collect.inputs import input_budget, parse_shape
        from dldoctor.load.base import LoadOptions
        from dldoctor.render.text import markup
        from dldoctor.api.probe import probe

        shapes = [parse_shape(s) for s in input_shape] if input_shape else None
        opts = LoadOptions(trust=trust, allow_classes=tuple(allow_class or ()), code=tuple(code or ()), arch=arch,
                           device=device)
        err = Console(stderr=True, quiet=quiet)
        if trust:
            err.print("[yellow]warning:[/] --trust loads files that may run code; use it only for files you would run as a program")
        with err.status(f"probing {markup(model)} ({steps} steps)", spinner="dots"), deadline(timeout), input_budget(budget):
            rep = probe(model, loss=loss, optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size, seed=seed,
                        device=device, data=data, input_shapes=shapes, dtype=dtype, load_options=opts, config=config,
                        attribution=not no_attribution)
        from dldoctor.render.html.probe import render_probe_html
        from dldoctor.render.rich.probe import render_probe_rich

        emit_report_and_exit(rep, fmt, output, config, render_probe_html, render_probe_rich, width=160)
