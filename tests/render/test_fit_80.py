"""Tables at 80 columns (issue 16 item 2): a layer path, a shape, a type name or a number is never split across
lines in inspect's and probe's output; a path too long for its column keeps its end behind an ellipsis; columns that
do not fit are dropped (and named) before anything is cut. The summary panels never break a number from its unit."""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dldoctor.cli import app
from dldoctor.render.rich.fit import Col, fit_table
from dldoctor.render.rich.report import _prewrap
from dldoctor.report.units import shape

runner = CliRunner()


class Deep(nn.Module):
    """Nested names long enough to overflow an 80-column layer column."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor_backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()))
        self.classification_head_projection = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classification_head_projection(self.feature_extractor_backbone(x))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "deep.pt"
    torch.manual_seed(0)
    torch.save(Deep(), path)
    return str(path)


def _whole_or_tail(ident: str, lines: list[str]) -> bool:
    """`ident` on one line, or its end (at least 6 characters) behind an ellipsis: never split over two lines."""
    if any(ident in line for line in lines):
        return True
    for line in lines:
        for m in re.finditer(r"…([\w.\-]+)", line):
            if len(m.group(1)) >= 6 and ident.endswith(m.group(1)):
                return True
    return False


def _run(*args: str) -> list[str]:
    r = runner.invoke(app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    return lines


def test_inspect_at_80_columns_splits_no_identifier(model):
    lines = _run("inspect", model, "-s", "1,3,32,32", "--depth", "9", "--allow-class", "tests.render.test_fit_80.Deep")
    doc = json.loads(runner.invoke(app, ["inspect", model, "-s", "1,3,32,32", "-f", "json", "--allow-class",
                                         "tests.render.test_fit_80.Deep"]).stdout)
    for lay in doc["layers"]:
        assert _whole_or_tail(lay["path"], lines), lay["path"]
        t = lay["type"]
        assert any(t in line or any(f"{t[:k]}…" in line for k in range(3, len(t))) for line in lines), t
        assert any(f"{lay['params']:,}" in line for line in lines), lay["params"]
        assert any(shape(lay["output_shape"]) in line for line in lines), lay["output_shape"]


def test_probe_at_80_columns_keeps_its_last_column(model):
    lines = _run("probe", model, "-s", "8,3,16,16", "--steps", "3", "--allow-class", "tests.render.test_fit_80.Deep")
    header = next(line for line in lines if "layer" in line and "dead units" in line)
    assert "upd/w" in header
    for path in ("feature_extractor_backbone.3.0", "classification_head_projection.2"):
        assert _whole_or_tail(path, lines), path


def test_fit_table_drops_low_value_columns_first_and_names_them():
    from rich.console import Console

    cols = [Col("path", keep=100, shorten="start", min_width=10), Col("n", keep=90, justify="right"),
            Col("note", keep=10)]
    rows = [["a.very.long.module.path.name.that.goes.on", "1,234,567", "x" * 40]]
    c = Console(width=50, record=True, color_system=None)
    c.print(fit_table(cols, rows, 50))
    out = c.export_text()
    assert "note: left out" in " ".join(out.split()) and "1,234,567" in out
    assert all(len(line) <= 50 for line in out.splitlines())
    assert "…" in out and "goes.on" in out  # the path keeps its end


def test_prewrap_never_breaks_a_number_from_its_unit():
    text = _prewrap("593.75 KiB (checkpointed 481.75 KiB), 8.19 K trainable (q k v o)", 40).plain
    for fig in ("593.75 KiB", "481.75 KiB", "8.19 K"):
        assert fig in text.replace("\n", "\n"), text
    assert all(len(line) <= 40 for line in text.splitlines())


def _console80():
    from rich.console import Console

    return Console(width=80, record=True, color_system=None, file=open("/dev/null", "w"))


def test_compress_table_at_80_columns_keeps_names_and_verdicts_whole():
    from dldoctor.render.rich.compress import render_compress_rich
    from dldoctor.report.compress_types import CompressResult, Fidelity, Variant

    names = ["fold-conv-bn", "torch-int8-dynamic", "onnx-int8-static", "onnx-fp16"]
    res = CompressResult(variants=[Variant(name=n, transform=n, format="onnx", status="kept", size_bytes=123_456,
                                           size_ratio=2.0, p50=0.001, speedup=1.5,
                                           fidelity=Fidelity(cosine=0.9999, top1=1.0)) for n in names],
                         out_dir="/tmp/x")
    res.variants[1].status, res.variants[1].reason = "rejected", "top-1 agreement 0.0% (budget 1.0%)"
    c = _console80()
    render_compress_rich(res, c)
    lines = c.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    for n in ["original", *names]:
        assert any(n in line for line in lines), n
    assert any(line.startswith("torch-int8-dynamic: top-1 agreement") for line in lines)  # why, under the table


def test_profile_whatifs_at_80_columns_keep_names_whole_and_say_why_below():
    from dldoctor.render.rich.profile import whatif_table
    from tests.fixtures.profile_cases import profile, whatif

    w = whatif(1.5)
    w.detail = "torch.autocast('cpu', dtype=torch.bfloat16); both sides on 1 thread (busy machine)"
    w.name = "bf16_autocast"
    c = _console80()
    c.print(whatif_table(profile(whatifs=[w, whatif(1.02)]), 80))
    lines = c.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any(line.startswith("bf16_autocast: torch.autocast(") for line in lines)
    assert sum("channels_last" in line for line in lines) >= 2  # its row, and its line below
