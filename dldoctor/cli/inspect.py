"""`dldoctor inspect`: parameters, FLOPs, memory, receptive field and a layer table."""
from __future__ import annotations

import os
from typing import List, Optional

import typer

from dldoctor.cli.common import (FORMATS, deadline, emit, error_line, fail, handle_errors, max_input_bytes_option,
                                 parse_max_input_bytes)
from dldoctor.cli.options import HASH_HELP, TRUST_HELP, load_cli_config

def register(app: typer.Typer) -> None:
    @app.command("inspect")
    @handle_errors
    def inspect_cmd(
        models: List[str] = typer.Argument(..., help="Model files, folders, or factory specs such as torchvision.models:resnet50 or mypkg.models:build(depth=18)."),
        input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help="Example input shape, e.g. 1,3,224,224; repeat for several inputs. Guessed (and marked assumed) when absent."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="Input dtype (float32, float16, bfloat16, int64...)."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or meta. On meta nothing is allocated: inspect huge factory-built models."),
        arch: Optional[str] = typer.Option(None, "--arch", help="pkg.mod:factory that builds the module for a state_dict or safetensors file."),
        allow_class: Optional[List[str]] = typer.Option(None, "--allow-class", help="Allow this class (pkg.mod.Cls) in a pickled model; repeatable."),
        code: Optional[List[str]] = typer.Option(None, "--code", help="A module (name or .py path) whose classes a pickled model may use; repeatable."),
        trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
        hash_all: bool = typer.Option(False, "--hash", help=HASH_HELP),
        optimizer: str = typer.Option("adam", "--optimizer", help="Optimizer for the training-step memory estimate: sgd, adam, adamw or none."),
        depth: Optional[int] = typer.Option(None, "--depth", "-d", help="Fold modules deeper than this in the layer table (terminal default 3; JSON keeps all unless set)."),
        fmt: str = typer.Option("rich", "--format", "-f", help="Output format: rich or json."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the report to this file (atomically) instead of stdout."),
        no_training: bool = typer.Option(False, "--no-training", help="Skip the training-step pass (FLOPs and memory of one step)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
        no_rules: bool = typer.Option(False, "--no-rules", help="Do not run the rules (findings are listed under the facts otherwise; they never change the exit code)."),
        loss: Optional[str] = typer.Option(None, "--loss", help="The training loss (ce, bce, bce_logits, nll, mse, l1, ...): the training pass uses it and the output-layer rules check against it."),
        batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Also estimate memory at these batch sizes, e.g. 1,8,32 (the inputs' first dimension is changed)."),
        config_file: Optional[str] = typer.Option(None, "--config", help="Configuration file for the rules (default: the nearest pyproject.toml / dldoctor.toml)."),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds with exit 2 (a model whose forward hangs)."),
        max_input_bytes: str = max_input_bytes_option(),
    ) -> None:
        """Parameters, FLOPs/MACs, memory, receptive field and a per-layer table for each model."""
        if fmt not in FORMATS:
            fail(f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
        budget = parse_max_input_bytes(max_input_bytes)
        problems: list[str] = []  # folders a scan could not list: one error line each
        from dldoctor.api.batch import expand

        sources = expand(models, problems)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [*sources, *(code or ()), config_file])
        config = None
        if not no_rules:
            config = load_cli_config(config_file, None, None, None, None)
        from rich.console import Console

        from dldoctor.api.check import check_model
        from dldoctor.collect.inputs import input_budget, parse_shape
        from dldoctor.errors import DLDoctorError
        from dldoctor.api.inspect import inspect
        from dldoctor.load.base import HASH_LIMIT, LoadOptions
        from dldoctor.render.text import markup

        shapes = [parse_shape(s) for s in input_shape] if input_shape else None
        sizes = parse_shape(batch_sizes) if batch_sizes else None
        opts = LoadOptions(trust=trust, allow_classes=tuple(allow_class or ()), code=tuple(code or ()), arch=arch, device=device,
                           hash_limit=None if hash_all else HASH_LIMIT)
        err = Console(stderr=True, quiet=quiet)
        if trust:
            err.print("[yellow]warning:[/] --trust loads files that may run code; use it only for files you would run as a program")
        reports = []
        failed: list[str] = list(problems)
        for src in sources:
            with err.status(f"inspecting {markup(src)}", spinner="dots"), deadline(timeout), input_budget(budget):
                try:
                    if config is None:
                        rep = inspect(src, input_shapes=shapes, dtype=dtype, device=device, depth=depth if fmt == "json" else None,
                                      optimizer=optimizer, training=not no_training, load_options=opts, loss=loss,
                                      batch_sizes=sizes)
                    else:
                        rep = check_model(src, config, input_shapes=shapes, dtype=dtype, device=device, loss=loss,
                                          depth=depth if fmt == "json" else None, optimizer=optimizer,
                                          training=not no_training, load_options=opts, batch_sizes=sizes).report
                except DLDoctorError as e:
                    if len(sources) == 1:
                        raise
                    failed.append(f"{src}: {e}")
                    continue
            reports.append(rep)
            for d in rep.diagnostics:
                if d.level == "error":
                    failed.append(f"{src}: {d.message}")
        if reports:
            if fmt == "json":
                from dldoctor.render.json import render_json

                emit(render_json(reports, single=len(sources) == 1), output)
            else:
                from dldoctor.render.rich.report import render_rich

                if output:
                    console = Console(record=True, width=140, file=open(os.devnull, "w"))  # noqa: SIM115
                    render_rich(reports, console, depth if depth is not None else 3)
                    emit(console.export_text(), output)
                else:
                    render_rich(reports, Console(), depth if depth is not None else 3)
        if failed:
            for line in failed:
                error_line(line)
            raise typer.Exit(2)
