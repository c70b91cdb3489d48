"""`dldoctor rules`: list the rules; `dldoctor rules explain CODE`: a rule's full documentation."""
from __future__ import annotations

from typing import Any, Optional

import typer

from dldoctor.cli.common import emit, fail, handle_errors
from dldoctor.cli.options import ExplainFormat, RulesFormat


def rule_dict(r: Any) -> dict[str, Any]:
    from dldoctor.rules.docs import option_names

    return {
        "code": r.code,
        "name": r.name,
        "family": r.family,
        "severity": r.severity.value,
        "needs": list(r.needs),
        "sources": list(r.sources),
        "summary": r.summary,
        "options": option_names(r),
        "doc": r.doc,
    }


def find_rule(key: str) -> Any:
    from dldoctor.rules.registry import all_rules

    for r in all_rules():
        if key.upper() == r.code or key == r.name:
            return r
    fail(f"no rule {key!r}", "`dldoctor rules` lists the codes and names")


def register(app: typer.Typer) -> None:
    rules_app = typer.Typer(
        help="List the rules, or explain one.", no_args_is_help=False, invoke_without_command=True, rich_markup_mode="rich"
    )

    @rules_app.callback(invoke_without_command=True)
    @handle_errors
    def rules_list(
        ctx: typer.Context,
        fmt: RulesFormat = "rich",
        family: Optional[str] = typer.Option(None, "--family", help="Only this family (arch, output, init, ...)."),
    ) -> None:
        """List every rule, one line each: code, name, default severity and summary (`-f json`: every field)."""
        if ctx.invoked_subcommand is not None:
            return
        from dldoctor.rules.registry import all_rules

        rules = [r for r in all_rules() if family is None or r.family == family]
        if fmt == "json":
            from dldoctor.render.json import render_json_doc
            from dldoctor.report.types import SCHEMA_VERSION

            emit(render_json_doc({"schema_version": SCHEMA_VERSION, "rules": [rule_dict(r) for r in rules]}), None)
            return
        if fmt != "rich":
            fail(f"unknown format {fmt!r}", "use rich or json")
        from rich.console import Console

        from dldoctor.render.rich.rules import render_rules_list

        render_rules_list([rule_dict(r) for r in rules], Console())

    @rules_app.command("explain")
    @handle_errors
    def explain(
        code: str = typer.Argument(..., help="A rule code (ARC004) or name (dropout-too-high)."),
        fmt: ExplainFormat = "rich",
    ) -> None:
        """Print a rule's full documentation: what it does, why, an example, what to do instead, options."""
        r = find_rule(code)
        from dldoctor.rules.docs import rule_page

        if fmt == "json":
            from dldoctor.render.json import render_json_doc

            emit(render_json_doc(rule_dict(r)), None)
        elif fmt == "markdown":
            emit(rule_page(r), None)
        elif fmt == "rich":
            from rich.console import Console

            from dldoctor.render.rich.rules import render_rule_page

            render_rule_page(rule_page(r), Console())
        else:
            fail(f"unknown format {fmt!r}", "use rich, markdown or json")

    app.add_typer(rules_app, name="rules")
