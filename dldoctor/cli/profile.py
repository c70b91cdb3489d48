"""`dldoctor profile`: measured latency, throughput, memory, breakdown and what-ifs."""
from __future__ import annotations

from typing import List, Optional

import typer

from dldoctor.cli.common import check_format, deadline, emit_report_and_exit, fail, handle_errors
from dldoctor.cli.options import (AllowClass, Arch, Code, FailOn, InputDtype, InputShapeAtBatch1, RunDtype, Limit, MAX_INPUT_BYTES_DEFAULT, MaxInputBytes,
                                  Output, Precision, ProfileBatchSizes, ProfileConfigFile, ProfileFormat, Quiet, ShowSkipped,
                                  RunDevice, Timeout, Trust, load_cli_config, load_options,
                                  parse_max_input_bytes, parse_shapes, warn_if_trusted)


def register(app: typer.Typer) -> None:
    @app.command("profile")
    @handle_errors
    def profile_cmd(
        model: str = typer.Argument(..., help="A model file (PyTorch or ONNX) or a factory spec."),
        device: RunDevice = "cpu",
        batch_sizes: ProfileBatchSizes = "1",
        precision: Precision = "fp32",
        dtype: RunDtype = None,
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (torch.set_num_threads) for the run."),
        warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
        iters: int = typer.Option(50, "--iters", help="Timed runs per batch size."),
        input_shape: InputShapeAtBatch1 = None,
        input_dtype: InputDtype = None,
        no_whatifs: bool = typer.Option(False, "--no-whatifs", help="Skip the measured what-ifs."),
        arch: Arch = None,
        allow_class: AllowClass = None,
        code: Code = None,
        trust: Trust = False,
        limit: Limit = None,
        fmt: ProfileFormat = "rich",
        output: Output = None,
        fail_on: FailOn = None,
        config_file: ProfileConfigFile = None,
        quiet: Quiet = False,
        show_skipped: ShowSkipped = False,
        timeout: Timeout = None,
        max_input_bytes: MaxInputBytes = MAX_INPUT_BYTES_DEFAULT,
    ) -> None:
        """Measure latency (p50/p90/p99), throughput per batch size, memory, the per-op and per-module time,
        achieved FLOP/s against the measured peak, and try changes for real (channels_last, bf16, inference_mode,
        torch.compile, threads, ONNX Runtime, larger batch), recommending only measured gains.

        --dtype (or -s NAME=...:DTYPE) is the inputs' dtype, as for inspect; --precision the model's compute
        precision (--input-dtype is a deprecated spelling of --dtype).

        Exit 0 when no finding reaches --fail-on (a latency budget over is an error), 1 when one does, 2 on bad input.
        """
        check_format("profile", fmt)
        budget = parse_max_input_bytes(max_input_bytes)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [model, *(code or ()), config_file])
        config = load_cli_config(config_file, None, None, None, fail_on)
        from rich.console import Console

        from dldoctor.collect.inputs import input_budget
        from dldoctor.render.text import markup
        from dldoctor.api.profile import profile

        try:
            sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            fail(f"--batch-sizes {batch_sizes!r}: each batch size must be at least 1", "e.g. --batch-sizes 1,8,32")
        shapes = parse_shapes(input_shape)
        opts = load_options(trust, allow_class, code, arch, limit=limit)  # loaded on the CPU; profile moves it to --device
        err = Console(stderr=True, quiet=quiet)
        warn_if_trusted(err, trust)
        from dldoctor.cli.progress import phases

        with phases(err, f"profiling {markup(model)}") as progress, deadline(timeout), input_budget(budget):
            rep = profile(model, device=device, batch_sizes=sizes, dtype=dtype or input_dtype, precision=precision,
                          threads=threads, warmup=warmup, iters=iters, input_shapes=shapes, load_options=opts, config=config,
                          whatifs=not no_whatifs, progress=progress)
        thresholds = config.family("profile")  # the page marks noise and speedups as the rules judged them
        emit_report_and_exit("profile", rep, fmt, output, config, width=140, show_skipped=show_skipped, quiet=quiet,
                             max_cv=thresholds.max_cv,
                             min_speedup=thresholds.min_speedup)
