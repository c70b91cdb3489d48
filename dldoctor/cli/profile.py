"""`dldoctor profile`: measured latency, throughput, memory, breakdown and what-ifs."""
from __future__ import annotations

from typing import List, Optional

import typer

from dldoctor.cli.common import (deadline, emit_report_and_exit, fail, handle_errors, max_input_bytes_option,
                                 parse_max_input_bytes)
from dldoctor.cli.options import TRUST_HELP

PROFILE_FORMATS = ("rich", "json", "html")


def register(app: typer.Typer) -> None:
    @app.command("profile")
    @handle_errors
    def profile_cmd(
        model: str = typer.Argument(..., help="A model file (PyTorch or ONNX) or a factory spec."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        batch_sizes: str = typer.Option("1", "--batch-sizes", "-b", help="Batch sizes to sweep, e.g. 1,8,32."),
        dtype: str = typer.Option("fp32", "--dtype", help="Model precision: fp32, fp16 or bf16."),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (torch.set_num_threads) for the run."),
        warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
        iters: int = typer.Option(50, "--iters", help="Timed runs per batch size."),
        input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help="Input shape at batch 1, e.g. 1,3,224,224 (guessed when absent)."),
        input_dtype: Optional[str] = typer.Option(None, "--input-dtype", help="Input dtype (float32, int64...)."),
        no_whatifs: bool = typer.Option(False, "--no-whatifs", help="Skip the measured what-ifs."),
        arch: Optional[str] = typer.Option(None, "--arch", help="pkg.mod:factory that builds the module for a state_dict."),
        allow_class: Optional[List[str]] = typer.Option(None, "--allow-class", help="Allow this class in a pickled model; repeatable."),
        code: Optional[List[str]] = typer.Option(None, "--code", help="A module whose classes a pickled model may use; repeatable."),
        trust: bool = typer.Option(False, "--trust", help=TRUST_HELP),
        fmt: str = typer.Option("rich", "--format", "-f", help="rich, json, or html (plots; use -o)."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the report to this file (atomically)."),
        fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Exit 1 when a finding reaches this severity (default error)."),
        config_file: Optional[str] = typer.Option(None, "--config", help="Configuration file (budgets such as max-latency-ms)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after this many seconds with exit 2 (a model whose forward hangs)."),
        max_input_bytes: str = max_input_bytes_option(),
    ) -> None:
        """Measure latency (p50/p90/p99), throughput per batch size, memory, the per-op and per-module time,
        achieved FLOP/s against the measured peak, and try changes for real (channels_last, bf16, inference_mode,
        torch.compile, threads, ONNX Runtime, larger batch), recommending only measured gains.

        Exit 0 when no finding reaches --fail-on (a latency budget over is an error), 1 when one does, 2 on bad input.
        """
        if fmt not in PROFILE_FORMATS:
            fail(f"unknown format {fmt!r}", f"use one of: {', '.join(PROFILE_FORMATS)}")
        budget = parse_max_input_bytes(max_input_bytes)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [model, *(code or ()), config_file])
        from dldoctor.cli.options import load_cli_config

        config = load_cli_config(config_file, None, None, None, fail_on)
        from rich.console import Console

        from dldoctor.collect.inputs import input_budget, parse_shape
        from dldoctor.load.base import LoadOptions
        from dldoctor.render.text import markup
        from dldoctor.api.profile import profile

        try:
            sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            fail(f"--batch-sizes {batch_sizes!r}: each batch size must be at least 1", "e.g. --batch-sizes 1,8,32")
        shapes = [parse_shape(s) for s in input_shape] if input_shape else None
        opts = LoadOptions(trust=trust, allow_classes=tuple(allow_class or ()), code=tuple(code or ()), arch=arch)
        err = Console(stderr=True, quiet=quiet)
        if trust:
            err.print("[yellow]warning:[/] --trust loads files that may run code; use it only for files you would run as a program")
        with err.status(f"profiling {markup(model)}", spinner="dots"), deadline(timeout), input_budget(budget):
            rep = profile(model, device=device, batch_sizes=sizes, dtype=dtype, threads=threads, warmup=warmup,
                          iters=iters, input_shapes=shapes, input_dtype=input_dtype, load_options=opts, config=config,
                          whatifs=not no_whatifs)
        from dldoctor.render.html.profile import render_profile_html
        from dldoctor.render.rich.profile import render_profile_rich

        emit_report_and_exit(rep, fmt, output, config, render_profile_html, render_profile_rich, width=140)
