"""`dldoctor probe`: a short training run on a deep copy that diagnoses the training dynamics."""
from __future__ import annotations

from typing import List, Optional

import typer

from dldoctor.cli.common import check_format, deadline, emit_report_and_exit, fail, handle_errors
from dldoctor.cli.options import (Head, AllowClass, Arch, Code, ConfigFile, FailOn, Ignore, Limit, MAX_INPUT_BYTES_DEFAULT, MaxInputBytes, Output,
                                  ProbeDtype, ProbeFormat, ProbeInputShape, ProbeLoss, Quiet, ShowSkipped, RunDevice, Select,
                                  Timeout, Trust, load_cli_config, load_options, parse_max_input_bytes,
                                  parse_shapes, warn_if_trusted)


def register(app: typer.Typer) -> None:
    @app.command("probe")
    @handle_errors
    def probe_cmd(
        model: str = typer.Argument(..., help="A model file or a factory spec such as mypkg.models:build(depth=18)."),
        loss: ProbeLoss = None,
        optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd (momentum 0.9), adam or adamw (default: adamw for a model with attention, else adam)."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: adam 3e-3, adamw 3e-3 or 1e-3 for a model with attention, sgd 5e-2)."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay (default: the optimizer's own: adamw 0.01, adam and sgd 0; adamw's is decoupled)."),
        steps: int = typer.Option(60, "--steps", help="Training steps."),
        batch_size: int = typer.Option(16, "--batch-size", "-b", help="Samples in the synthetic batch."),
        seed: int = typer.Option(0, "--seed", help="Random seed (the run is deterministic under it)."),
        device: RunDevice = "cpu",
        data: Optional[str] = typer.Option(None, "--data", help="pkg.mod:batches, a function returning an iterable of (x, y) batches (your own data; it also checks the inputs)."),
        input_shape: ProbeInputShape = None,
        dtype: ProbeDtype = None,
        arch: Arch = None,
        allow_class: AllowClass = None,
        code: Code = None,
        trust: Trust = False,
        limit: Limit = None,
        no_attribution: bool = typer.Option(False, "--no-attribution", help="Skip the captum attributions."),
        fmt: ProbeFormat = "rich",
        output: Output = None,
        select: Select = None,
        ignore: Ignore = None,
        fail_on: FailOn = None,
        config_file: ConfigFile = None,
        quiet: Quiet = False,
        show_skipped: ShowSkipped = False,
        timeout: Timeout = None,
        max_input_bytes: MaxInputBytes = MAX_INPUT_BYTES_DEFAULT,
        head: Head = None,
    ) -> None:
        """Train a deep copy for a few dozen steps and diagnose vanishing/exploding gradients, dead units,
        saturation, NaN, stuck weights, a loss that cannot fall, learning-rate and loss/head mistakes.

        Exit 0 when no finding reaches --fail-on, 1 when one does, 2 when the model cannot be loaded or run.
        """
        check_format("probe", fmt)
        if device not in ("cpu", "cuda"):
            fail(f"unknown device {device!r}", "the probe trains for real: use cpu or cuda")
        budget = parse_max_input_bytes(max_input_bytes)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [model, *(code or ()), config_file])
        config = load_cli_config(config_file, select, None, ignore, fail_on, head=head)
        from rich.console import Console

        from dldoctor.collect.inputs import input_budget
        from dldoctor.render.text import markup
        from dldoctor.api.probe import probe

        shapes = parse_shapes(input_shape)
        opts = load_options(trust, allow_class, code, arch, device, limit=limit)
        err = Console(stderr=True, quiet=quiet)
        warn_if_trusted(err, trust)
        from dldoctor.cli.progress import phases

        with phases(err, f"probing {markup(model)}") as progress, deadline(timeout), input_budget(budget):
            rep = probe(model, loss=loss, optimizer=optimizer, lr=lr, weight_decay=weight_decay, steps=steps,
                        batch_size=batch_size, seed=seed,
                        device=device, data=data, input_shapes=shapes, dtype=dtype, load_options=opts, config=config,
                        attribution=not no_attribution, progress=progress)
        emit_report_and_exit("probe", rep, fmt, output, config, width=160, show_skipped=show_skipped,
                             quiet=quiet)
