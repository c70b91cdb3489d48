"""render/ reads only the report types (docs/architecture.md): the diff results and a finding's identity live in
report/, the profile page takes its thresholds from the caller, and one table picks every renderer."""
from __future__ import annotations

import json

import subprocess
import sys

from dldoctor.report.profile_types import LatencyStats, ProfileResult, WhatIf
from dldoctor.report.types import ModelInfo, Report


def _noisy_page(**thresholds: float) -> str:
    from dldoctor.render.html.profile import render_profile_html

    lat = LatencyStats(batch_size=1, iters=10, mean=1e-3, std=1.5e-4, p50=1e-3, cv=0.15, noisy=False)
    rep = Report(model=ModelInfo(path="m.pt", format="pytorch"), profile=ProfileResult(latency=[lat], whatifs=[WhatIf(name="channels_last", speedup=1.3)]))
    return render_profile_html(rep.to_dict(), **thresholds)


def test_profile_page_thresholds_come_from_the_caller_with_the_rule_defaults() -> None:
    from dldoctor.render.html import profile as page
    from dldoctor.rules.options import ProfileOptions

    assert (page.MAX_CV, page.MIN_SPEEDUP) == (ProfileOptions().max_cv, ProfileOptions().min_speedup)
    noisy = 'class="badge b-warning">noisy'
    assert _noisy_page().count(noisy) == 2  # cv 15% over the default 10%: panel and table
    assert _noisy_page(max_cv=0.2).count(noisy) == 0  # the configuration that judged the report allows 20%
    assert "threshold 1.1×" in _noisy_page() and "threshold 1.5×" in _noisy_page(min_speedup=1.5)


def test_diff_results_and_finding_identity_live_in_report() -> None:
    from dldoctor.api import baseline, diff
    from dldoctor.report import baseline as identity
    from dldoctor.report import diff_types

    assert diff.Diff is diff_types.Diff and diff.MetricDelta is diff_types.MetricDelta
    assert diff.LayerChange is diff_types.LayerChange and diff.BudgetCheck is diff_types.BudgetCheck
    assert baseline.entry is identity.entry and baseline.message_hash is identity.message_hash
    assert baseline.fingerprint is identity.fingerprint and baseline.model_key is identity.model_key


def test_report_and_render_modules_do_not_import_torch() -> None:
    code = ("import sys\n"
            "import dldoctor.report.diff_types, dldoctor.report.baseline\n"
            "import dldoctor.render.sarif, dldoctor.render.html.profile, dldoctor.render.rich.diff\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert not any(m.startswith(('dldoctor.api', 'dldoctor.rules')) for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('dldoctor.api', 'dldoctor.rules')))\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_render_modules_share_only_public_names() -> None:
    """A helper one render module takes from another is part of that module's API: no `_private` imports (the
    HTML pages draw with the kit's public names, the diff page with markdown's `cell`/`code`)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "dldoctor" / "render"
    private = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dldoctor.render"):
                private += [f"{path.relative_to(root)}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert not private, private
    kit = (root / "html" / "kit.py").read_text(encoding="utf-8")
    assert "def render_probe_html" not in kit and "def svg_line" in kit  # the kit draws; the pages are beside it


# -- one table: (result kind, format) -> renderer ------------------------------------------------------------------

KINDS = {"inspect": ("rich", "json"), "check": ("concise", "full", "grouped", "json", "sarif", "markdown", "github"),
         "probe": ("rich", "json", "html"), "profile": ("rich", "json", "html"), "compress": ("rich", "json"),
         "diff": ("rich", "json", "markdown")}


def test_the_table_lists_each_kinds_formats() -> None:
    import pytest

    from dldoctor.render import RENDERERS, formats, render, renderer

    assert {k: formats(k) for k in KINDS} == KINDS
    assert set(RENDERERS) == {(k, f) for k, fs in KINDS.items() for f in fs}
    with pytest.raises(ValueError, match="use one of rich, json, markdown"):
        renderer("diff", "sarif")
    with pytest.raises(ValueError, match="unknown result kind"):
        formats("nope")
    with pytest.raises(ValueError):
        render("inspect", "html", [])


def test_rich_is_recorded_at_a_width_or_printed_to_a_console() -> None:
    import io

    from rich.console import Console

    from dldoctor.render import render

    rep = Report(model=ModelInfo(path="wide-" + "x" * 150 + ".pt", format="pytorch"))
    narrow, wide = render("inspect", "rich", [rep], width=60), render("inspect", "rich", [rep], width=200)
    assert "\x1b" not in narrow and max(map(len, narrow.splitlines())) <= 60 < max(map(len, wide.splitlines()))
    buf = io.StringIO()
    assert render("inspect", "rich", [rep], console=Console(file=buf, width=200)) == ""
    assert buf.getvalue() == wide
    doc = render("check", "json", [rep], summary={"errors": 0}, failures=[])
    assert '"summary": {\n    "errors": 0\n  }' in doc and json.loads(doc)["reports"][0]["model"]["path"] == rep.model.path
    line = render("check", "concise", [rep], width=60, summary={"files": 1})  # a terminal format, recorded
    assert line == "All checks passed!\n"


def test_cli_takes_its_formats_from_the_table(tmp_path) -> None:
    from typer.testing import CliRunner

    from dldoctor.cli import app

    runs = {"inspect": ["inspect", "m.pt"], "check": ["check", "m.pt"], "probe": ["probe", "m.pt"],
            "profile": ["profile", "m.pt"], "diff": ["diff", "a.pt", "b.pt"]}
    for kind, args in runs.items():
        r = CliRunner().invoke(app, [*args, "-f", "xml"])
        assert r.exit_code == 2, (kind, r.output)
        assert f"use one of: {', '.join(KINDS[kind])}" in r.output, (kind, r.output)
    r = CliRunner().invoke(app, ["compress", "m.pt", "-f", "xml"])
    assert r.exit_code == 2 and "use rich or json" in r.output


def test_commands_pick_no_renderer_themselves() -> None:
    """cli/ hands results to render.render (through cli/common.py); no command imports a renderer module."""
    import ast
    from pathlib import Path

    cli = Path(__file__).resolve().parents[2] / "dldoctor" / "cli"
    picked = []
    for name in ("inspect", "check", "diff", "compress", "probe", "profile", "common"):
        tree = ast.parse((cli / f"{name}.py").read_text(encoding="utf-8"))
        picked += [f"{name}: {n.module}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and (n.module or "").startswith("dldoctor.render.") and n.module != "dldoctor.render.text"]
    assert not picked, picked


def test_help_imports_no_renderer_and_no_torch() -> None:
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from dldoctor.cli import app\n"
            "for args in (['--help'], ['check', '--help'], ['profile', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('dldoctor.render.'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_profile_page_marks_noise_as_the_configuration_judged_it(tmp_path) -> None:
    """`dldoctor profile -f html` hands the configured thresholds (here PRF002's max-cv) to the page."""
    import torch
    from typer.testing import CliRunner

    from dldoctor.cli import app

    torch.save(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), tmp_path / "m.pt")
    cfg = tmp_path / "dldoctor.toml"
    cfg.write_text("[profile]\nmax-cv = 0.42\n")
    page = tmp_path / "p.html"
    r = CliRunner().invoke(app, ["profile", str(tmp_path / "m.pt"), "--trust", "--warmup", "1", "--iters", "3",
                                 "--no-whatifs", "--config", str(cfg), "-f", "html", "-o", str(page)])
    assert r.exit_code in (0, 1), r.output
    text = page.read_text(encoding="utf-8")
    assert "more than 42% (cv = std / mean)" in text  # the rule default is 10%
