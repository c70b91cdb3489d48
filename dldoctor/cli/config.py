"""`dldoctor config`: the resolved configuration (file + flags), and where it came from."""
from __future__ import annotations

import json
from typing import Any, List, Optional

import typer

from dldoctor.cli.common import emit, fail, handle_errors
from dldoctor.cli.options import ConfigCmdFile, ConfigFormat, ExtendSelect, FailOn, Ignore, Select, load_cli_config


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is JSON-compatible for what we write
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v).__name__)


def to_toml(config: Any) -> str:
    """The configuration as a dldoctor.toml would spell it; unset options are shown commented out."""
    d = config.to_dict()
    lines = [f"# from: {config.source or 'built-in defaults (no dldoctor.toml or [tool.dldoctor] found)'}"]
    for key in ("select", "extend-select", "ignore", "fail-on", "exclude", "extend-exclude"):
        lines.append(f"{key} = {_toml_value(d[key])}")
    lines += ["", "[per-file-ignores]"]
    lines += [f"{json.dumps(g)} = {_toml_value(c)}" for g, c in d["per-file-ignores"].items()]
    for fam, opts in d.items():
        if not isinstance(opts, dict) or fam == "per-file-ignores":
            continue
        lines += ["", f"[{fam}]"]
        for k, v in opts.items():
            lines.append(f"# {k} = (unset)" if v is None else f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command("config")
    @handle_errors
    def config_cmd(
        fmt: ConfigFormat = "toml",
        config_file: ConfigCmdFile = None,
        select: Select = None,
        extend_select: ExtendSelect = None,
        ignore: Ignore = None,
        fail_on: FailOn = None,
    ) -> None:
        """Print the resolved configuration: the nearest config file with the flags applied, and its source."""
        config = load_cli_config(config_file, select, extend_select, ignore, fail_on)
        if fmt == "json":
            from dldoctor.render.json import render_json_doc

            emit(render_json_doc({"source": config.source, "config": config.to_dict()}), None)
        elif fmt == "toml":
            emit(to_toml(config), None)
        else:
            fail(f"unknown format {fmt!r}", "use toml or json")
