"""`dldoctor check`: judge models with the rules, for CI. Exit 0 clean, 1 findings at or above --fail-on, 2 errors.

The terminal output is ruff's: one line per finding (`PATH:LOCATION: CODE message`), a summary line, the skipped
rules counted in one line on stderr (`--show-skipped` lists them); `--output-format` (alias `--format`, `-f`)
picks concise, full, grouped or a machine-readable format."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer

from dldoctor.cli.common import (check_format, debug, emit_rendered, error_line, fail, handle_errors,
                                 report_skipped)
from dldoctor.cli.options import (Head, AllowClass, Arch, CHECK_FORMAT_DEFAULT, CheckDevice, CheckFormat, CheckTimeout, Code,
                                  ConfigFile, Dtype, Exclude, ExtendExclude, ExtendSelect, FailOn, HashAll, Ignore,
                                  InputShape, Limit, Loss, MAX_INPUT_BYTES_DEFAULT, MaxInputBytes, Output, Quiet,
                                  Select, ShowFixes, ShowSkipped, Statistics, Trust, load_cli_config, load_options,
                                  parse_max_input_bytes, parse_shapes, warn_if_trusted)
from dldoctor.fileops import write_atomic


def summary(reports: list[Any], unloaded: int, failed: int, rule_errors: int, suppressed: int) -> dict[str, int]:
    """Counts for CI: findings by severity (after the baseline), files, and what went wrong."""
    s = {"errors": 0, "warnings": 0, "infos": 0, "files": len(reports) + unloaded, "failed": failed,
         "rule_errors": rule_errors, "baseline_suppressed": suppressed}
    for r in reports:
        for f in r.findings:
            s[f"{f.severity}s"] = s.get(f"{f.severity}s", 0) + 1
    return s


def register(app: typer.Typer) -> None:
    @app.command("check")
    @handle_errors
    def check_cmd(
        models: List[str] = typer.Argument(..., help="Model files, folders, or factory specs such as torchvision.models:resnet50."),
        select: Select = None,
        extend_select: ExtendSelect = None,
        ignore: Ignore = None,
        fail_on: FailOn = None,
        fmt: CheckFormat = CHECK_FORMAT_DEFAULT,
        show_fixes: ShowFixes = False,
        statistics: Statistics = False,
        show_skipped: ShowSkipped = False,
        exclude: Exclude = None,
        extend_exclude: ExtendExclude = None,
        output: Output = None,
        exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 even when findings reach --fail-on (errors loading a model still exit 2)."),
        config_file: ConfigFile = None,
        loss: Loss = None,
        dataset_size: Optional[int] = typer.Option(None, "--dataset-size", help="Number of training examples, for the transfer-learning rules."),
        input_shape: InputShape = None,
        dtype: Dtype = None,
        device: CheckDevice = "cpu",
        arch: Arch = None,
        allow_class: AllowClass = None,
        code: Code = None,
        trust: Trust = False,
        limit: Limit = None,
        hash_all: HashAll = False,
        baseline: Optional[str] = typer.Option(None, "--baseline", help="Ignore the findings recorded in this baseline file: only new ones are reported and counted."),
        write_baseline: Optional[str] = typer.Option(None, "--write-baseline", help="Record every current finding in this file (then exit 0 unless a model failed)."),
        quiet: Quiet = False,
        jobs: int = typer.Option(1, "--jobs", "-j", help="Check files in this many worker processes (each imports torch once)."),
        timeout: CheckTimeout = None,
        profile: bool = typer.Option(False, "--profile", help="Also measure each model's latency (at budget.latency-batch-size on budget.latency-device) so the latency budget (BUD010) and the PRF rules can run."),
        max_input_bytes: MaxInputBytes = MAX_INPUT_BYTES_DEFAULT,
        head: Head = None,
    ) -> None:
        """Run the rules over each model; report findings for CI (exit 1 when any reaches --fail-on)."""
        if fmt == "rich":  # the name of the terminal output before ruff's formats: the one-line form
            fmt = "concise"
        check_format("check", fmt)
        budget = parse_max_input_bytes(max_input_bytes)
        config = load_cli_config(config_file, select, extend_select, ignore, fail_on, exclude=exclude,
                                 extend_exclude=extend_exclude, head=head)
        problems: list[str] = []  # folders a scan could not list: one error line each
        from dldoctor.api.batch import expand

        sources = expand(models, problems, exclude=config.excluded, root=config.root)
        from dldoctor.fileops import check_output_path

        given = [*sources, *(code or ()), config_file]
        if output is not None:
            check_output_path(output, [*given, baseline, write_baseline])
        if write_baseline is not None:  # --baseline may name the same file: the old findings are read first, then replaced
            check_output_path(write_baseline, given, flag="--write-baseline")
        from dldoctor.api.baseline import load_baseline, render_baseline

        known = load_baseline(baseline) if baseline else None
        from rich.console import Console

        err = Console(stderr=True, quiet=quiet)
        warn_if_trusted(err, trust)

        from dldoctor.api.batch import check_files, in_workers
        from dldoctor.render.text import markup
        from dldoctor.collect.facts import normalise_loss

        normalise_loss(loss)  # an unknown loss is a usage error before any model loads
        shapes = parse_shapes(input_shape)
        opts = load_options(trust, allow_class, code, arch, device, hash_all, limit)
        if jobs < 1:
            fail(f"--jobs {jobs}: need at least 1", "e.g. --jobs 4")
        if timeout is not None and timeout <= 0:
            fail(f"--timeout {timeout:g}: need a positive number of seconds", "e.g. --timeout 120")
        kwargs = dict(jobs=jobs, timeout=timeout, max_input_bytes=budget, problems=problems, input_shapes=shapes,
                      dtype=dtype, device=device, loss=loss, dataset_size=dataset_size, load_options=opts,
                      profile=profile)
        if in_workers(jobs, timeout):
            with err.status(f"checking {len(sources)} file(s) in {jobs} worker(s)", spinner="dots"):
                batch = check_files(sources, config, **kwargs)
        elif len(sources) > 1 and not quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.description}"), console=err, transient=True) as progress:
                task = progress.add_task("", total=len(sources))

                @contextmanager
                def step(src: str) -> Iterator[None]:
                    progress.update(task, description=markup(os.path.basename(src)))
                    yield
                    progress.advance(task)

                batch = check_files(sources, config, around=step, **kwargs)
        else:
            batch = check_files(sources, config, around=lambda src: err.status(f"checking {markup(src)}", spinner="dots"),
                                **kwargs)
        if debug():
            for tb in batch.tracebacks:
                sys.stderr.write(tb)
        reports, failures = batch.reports, batch.failures

        if write_baseline:
            text = render_baseline(reports, Path(write_baseline).resolve().parent)
            write_atomic(write_baseline, text)
            n = sum(len(r.findings) for r in reports)
            err.print(f"wrote {n} finding{'s' if n != 1 else ''} to the baseline {markup(write_baseline)}")
        suppressed = sum(known.filter(r) for r in reports) if known is not None else 0

        stats = summary(reports, batch.unloaded, batch.failed, batch.rule_errors, suppressed)
        from dldoctor.rules.registry import all_rules

        emit_rendered("check", fmt, reports, output, failures=failures, summary=stats, suppressed=suppressed,
                      rules=all_rules(), show_fixes=show_fixes, statistics=statistics)
        for r in reports:  # what a collector warned about (not a finding, not a failure): stderr, like ruff's warnings
            for d in r.diagnostics:
                if d.level == "warning" and not d.message.startswith("rule "):
                    error_line(f"{r.model.path}: {d.message}", prefix="warning")
        report_skipped(reports, fmt, output, show=show_skipped, quiet=quiet)
        for line in failures:
            error_line(line)
        if failures:
            raise typer.Exit(2)
        if write_baseline or exit_zero:
            raise typer.Exit(0)
        if any(config.fails(f.severity) for r in reports for f in r.findings):
            raise typer.Exit(1)
