"""`dldoctor inspect`: parameters, FLOPs, memory, receptive field and a layer table."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional

import typer

from dldoctor.cli.common import check_format, deadline, emit_rendered, error_line, handle_errors, report_skipped
from dldoctor.cli.options import (Head, AllowClass, Arch, Code, ConfigFile, Dtype, HashAll, InputShape, InspectBatchSizes, InspectDevice, InspectFormat,
                                  Limit, Loss, MAX_INPUT_BYTES_DEFAULT, MaxInputBytes, Output, Quiet, ShowSkipped, Timeout,
                                  Trust, load_cli_config, load_options, parse_max_input_bytes, parse_shapes,
                                  warn_if_trusted)
from dldoctor.cli.options import PlanContext, PlanGpus, PlanKvDtype, PlanLoraRank, PlanStrategy


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    @handle_errors
    def inspect_cmd(
        models: List[str] = typer.Argument(..., help="Model files, folders, or factory specs such as torchvision.models:resnet50 or mypkg.models:build(depth=18)."),
        input_shape: InputShape = None,
        dtype: Dtype = None,
        device: InspectDevice = "cpu",
        arch: Arch = None,
        allow_class: AllowClass = None,
        code: Code = None,
        trust: Trust = False,
        limit: Limit = None,
        hash_all: HashAll = False,
        optimizer: str = typer.Option("adam", "--optimizer", help="Optimizer for the training-step memory estimate: sgd, adam, adamw or none."),
        depth: Optional[int] = typer.Option(None, "--depth", "-d", help="Fold modules deeper than this in the layer table (terminal default 3; JSON keeps all unless set)."),
        fmt: InspectFormat = "rich",
        output: Output = None,
        no_training: bool = typer.Option(False, "--no-training", help="Skip the training-step pass (FLOPs and memory of one step)."),
        quiet: Quiet = False,
        show_skipped: ShowSkipped = False,
        no_rules: bool = typer.Option(False, "--no-rules", help="Do not run the rules (findings are listed under the facts otherwise; they never change the exit code)."),
        loss: Loss = None,
        batch_sizes: InspectBatchSizes = None,
        config_file: ConfigFile = None,
        timeout: Timeout = None,
        max_input_bytes: MaxInputBytes = MAX_INPUT_BYTES_DEFAULT,
        head: Head = None,
        context: PlanContext = None,
        gpus: PlanGpus = 1,
        strategy: PlanStrategy = "ddp",
        lora_rank: PlanLoraRank = 16,
        kv_dtype: PlanKvDtype = None,
    ) -> None:
        """Parameters, FLOPs/MACs, memory, receptive field and a per-layer table for each model."""
        check_format("inspect", fmt)
        budget = parse_max_input_bytes(max_input_bytes)
        problems: list[str] = []  # folders a scan could not list: one error line each
        from dldoctor.api.batch import expand

        sources = expand(models, problems)
        if output is not None:
            from dldoctor.fileops import check_output_path

            check_output_path(output, [*sources, *(code or ()), config_file])
        config = None
        if not no_rules:
            config = load_cli_config(config_file, None, None, None, None, head=head)
        from rich.console import Console

        from dldoctor.api.batch import inspect_files
        from dldoctor.collect.inputs import parse_shape
        from dldoctor.render.text import markup

        shapes = parse_shapes(input_shape)
        sizes = parse_shape(batch_sizes) if batch_sizes else None
        opts = load_options(trust, allow_class, code, arch, device, hash_all, limit)
        err = Console(stderr=True, quiet=quiet)
        warn_if_trusted(err, trust)

        @contextmanager
        def shown(src: str) -> Iterator[None]:
            with err.status(f"inspecting {markup(src)}", spinner="dots"), deadline(timeout):
                yield

        from dldoctor.api.inspect import check_plan_options
        from dldoctor.report.llm_types import PlanOptions

        plan = PlanOptions(context=context, gpus=gpus, strategy=strategy, lora_rank=lora_rank, kv_dtype=kv_dtype)
        check_plan_options(plan)
        batch = inspect_files(sources, config, max_input_bytes=budget, problems=problems, around=shown,
                              input_shapes=shapes, dtype=dtype, device=device, depth=depth if fmt == "json" else None,
                              optimizer=optimizer, training=not no_training, load_options=opts, loss=loss,
                              batch_sizes=sizes, plan=plan)
        reports, failed = batch.reports, batch.failures
        if reports:
            emit_rendered("inspect", fmt, reports, output, depth=depth if depth is not None else 3,
                          single=len(sources) == 1)
            report_skipped(reports, fmt, output, show=show_skipped, quiet=quiet)
        if failed:
            for line in failed:
                error_line(line)
            raise typer.Exit(2)
