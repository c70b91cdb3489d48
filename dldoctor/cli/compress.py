"""`dldoctor compress`: quantized, pruned, fp16 and folded variants, each measured, regressions rejected."""
from __future__ import annotations

from typing import List, Optional

import typer

from dldoctor.cli.common import check_format, deadline, emit_rendered, handle_errors
from dldoctor.cli.options import (CompressDevice, AllowClass, Arch, Code, CompressFormat, CompressOutput, InputDtype, InputShapeAtBatch1, RunDtype, Limit, Precision,
                                  MAX_INPUT_BYTES_DEFAULT, MaxInputBytes, Quiet, Timeout, Trust, load_options,
                                  parse_max_input_bytes, parse_shapes, warn_if_trusted)
from dldoctor.transforms import catalog as transforms



def _check_drop(value: str) -> str:
    """--max-drop checked when the command line is read (exit 2 before anything loads)."""
    from dldoctor.api.compress import parse_drop
    from dldoctor.errors import DLDoctorError

    try:
        parse_drop(value)
    except DLDoctorError as e:
        raise typer.BadParameter(e.message.removeprefix(f"--max-drop {value!r}: ")) from None
    return value

def register(app: typer.Typer) -> None:
    @app.command("compress")
    @handle_errors
    def compress_cmd(
        model: str = typer.Argument(..., help="A model file (PyTorch or ONNX) or a factory spec."),
        out_dir: CompressOutput = None,
        transform: Optional[List[str]] = typer.Option(None, "--transform", "-t", help=f"Only these transforms (repeatable): {', '.join(transforms.names())}."),
        from_findings: bool = typer.Option(False, "--from-findings", help="Apply the transforms the rules' findings point to."),
        optimize: str = typer.Option("latency", "--optimize", help="Recommend the fastest (latency) or the smallest (size) variant within budget."),
        max_drop: str = typer.Option("1%", "--max-drop", callback=_check_drop, help="Fidelity budget: 1% (relative) or 0.01 (absolute) of the --eval metric, or top-1 disagreement / 1 - cosine without one."),
        eval_fn: Optional[str] = typer.Option(None, "--eval", help="pkg.mod:fn: a factory returning fn(model) -> number (higher is better), your own metric."),
        calib: Optional[str] = typer.Option(None, "--calib", help="pkg.mod:batches: calibration batches for static int8 (default: synthetic)."),
        keep_rejected: bool = typer.Option(False, "--keep-rejected", help="Also write the rejected variants."),
        input_shape: InputShapeAtBatch1 = None,
        dtype: RunDtype = None,
        precision: Precision = "fp32",
        input_dtype: InputDtype = None,
        iters: int = typer.Option(30, "--iters", help="Timed runs per variant."),
        device: CompressDevice = "auto",
        arch: Arch = None,
        allow_class: AllowClass = None,
        code: Code = None,
        trust: Trust = False,
        limit: Limit = None,
        fmt: CompressFormat = "rich",
        quiet: Quiet = False,
        timeout: Timeout = None,
        max_input_bytes: MaxInputBytes = MAX_INPUT_BYTES_DEFAULT,
    ) -> None:
        """Make compressed variants (int8, fp16/bf16, pruned, folded), measure size, latency and output fidelity of
        each against the original in the same run, reject what is bigger, slower or outside the budget, and save
        the best. Exit 0 when a variant was produced, 1 when none could be, 2 on bad input.

        -s takes keyword inputs too (-s input_ids=1,128:int64; a Hugging Face folder's come from config.json);
        --dtype is the inputs' dtype, --precision the original's compute precision (a bf16 model: --precision bf16)."""
        check_format("compress", fmt, "use rich or json")
        budget = parse_max_input_bytes(max_input_bytes)
        transforms.check_names(transform or ())  # a mistyped -t fails before anything loads
        from dldoctor.fileops import check_output_path
        from dldoctor.api.compress import compress, default_out_dir

        # the folder is checked before anything loads: the one named with -o, or the default beside the input
        check_output_path(out_dir or default_out_dir(model), [model, *(code or ())], kind="folder")
        from rich.console import Console

        from dldoctor.collect.inputs import input_budget

        shapes = parse_shapes(input_shape)
        opts = load_options(trust, allow_class, code, arch, limit=limit)
        err = Console(stderr=True, quiet=quiet)
        warn_if_trusted(err, trust)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("compress"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=err, transient=True) as bar, deadline(timeout), input_budget(budget):
            task = bar.add_task("loading", total=None)

            def progress(text: str, done: int, total: int) -> None:
                bar.update(task, description=text, completed=done, total=total)

            rep = compress(model, out_dir=out_dir, transforms=transform, from_findings=from_findings, optimize=optimize,
                           max_drop=max_drop, eval_fn=eval_fn, calib=calib, keep_rejected=keep_rejected,
                           input_shapes=shapes, input_dtype=dtype or input_dtype, load_options=opts, iters=iters, device=device, precision=precision,
                           progress=progress)
        res = rep.compress
        emit_rendered("compress", fmt, rep, None)  # -o names the folder of the variants, not this output
        if not any(v.status != "failed" for v in res.variants):
            typer.echo("dldoctor: no variant could be produced (see the reasons above)", err=True)
            raise typer.Exit(1)
