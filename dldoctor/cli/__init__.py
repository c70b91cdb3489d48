"""The `dldoctor` command. One module per command; torch is imported only inside commands."""
from __future__ import annotations

from typing import Optional

import typer

from dldoctor._version import __version__
from dldoctor.cli.help import tidy_metavars

tidy_metavars()

app = typer.Typer(
    name="dldoctor",
    help="A doctor for deep-learning models: exact parameters, FLOPs, memory and receptive field, and advice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dldoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """dldoctor: open a PyTorch or ONNX model and tell the truth about it."""


from dldoctor.cli import check as _check_cmd  # noqa: E402
from dldoctor.cli import config as _config_cmd  # noqa: E402
from dldoctor.cli import diff as _diff_cmd  # noqa: E402
from dldoctor.cli import inspect as _inspect_cmd  # noqa: E402  (registers the command)
from dldoctor.cli import probe as _probe_cmd  # noqa: E402
from dldoctor.cli import profile as _profile_cmd  # noqa: E402
from dldoctor.cli import compress as _compress_cmd  # noqa: E402
from dldoctor.cli import rules as _rules_cmd  # noqa: E402

_inspect_cmd.register(app)
_check_cmd.register(app)
_rules_cmd.register(app)
_config_cmd.register(app)
_diff_cmd.register(app)
_probe_cmd.register(app)
_profile_cmd.register(app)
_compress_cmd.register(app)


def main() -> None:
    import sys

    from dldoctor.cli.usage import run

    sys.exit(run(app))
