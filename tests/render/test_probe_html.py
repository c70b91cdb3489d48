"""The probe report as a self-contained HTML page: well-formed, offline, escaped, robust to missing data,
and (where chromium is installed) rendered by a real headless browser."""
from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dldoctor.report.probe_types import Histogram, LayerProbe, ParamProbe, ProbeResult
from dldoctor.render.html.probe import MAX_HIST_LAYERS, render_probe_html
from dldoctor.report.types import Diagnostic, Finding, ModelInfo, Report

STEPS = 10
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _hist(centre: float, spread: float, bins: int = 12) -> Histogram:
    lo = centre - 3 * spread
    step = 6 * spread / bins
    edges = [lo + i * step for i in range(bins + 1)]
    counts = [int(1000 * math.exp(-((e + step / 2 - centre) / spread) ** 2 / 2)) for e in edges[:-1]]
    return Histogram(edges=edges, counts=counts)


def _probe() -> ProbeResult:
    steps = list(range(STEPS))
    loss = [2.3 * math.exp(-0.2 * i) + 0.1 for i in steps]
    loss[4] = None  # a non-finite loss at step 4
    layers = [
        LayerProbe(path="features.0", type="Conv2d", order=0, mean=[0.01 * i for i in steps], std=[1.0] * STEPS,
                   zero_frac=[0.0] * STEPS, dead_frac=[None] * STEPS, saturated_frac=[None] * STEPS,
                   nonfinite=[0] * STEPS, units=16, hist_first=_hist(0, 1), hist_last=_hist(0.2, 1.5)),
        LayerProbe(path="features.1", type="ReLU", order=1, mean=[0.4] * STEPS, std=[0.6] * STEPS,
                   zero_frac=[0.5 + 0.02 * i for i in steps], dead_frac=[0.05 * i for i in steps],
                   saturated_frac=[None] * STEPS, nonfinite=[0] * STEPS, units=16,
                   hist_first=_hist(0.5, 0.5), hist_last=None),  # one histogram missing
        LayerProbe(path="head.act", type="Sigmoid", order=2, mean=[0.5] * STEPS, std=[0.3] * STEPS,
                   zero_frac=[0.0] * STEPS, dead_frac=[0.0] * STEPS, saturated_frac=[0.1 + 0.05 * i for i in steps],
                   nonfinite=[0] * STEPS, units=10, hist_first=_hist(0.5, 0.1), hist_last=_hist(0.6, 0.2)),
    ]
    gn = [1e-2 * (1 + i) for i in steps]
    gn_gap = list(gn)
    gn_gap[3] = None  # no gradient reached it that step
    params = [
        ParamProbe(name="features.0.weight", module="features.0", module_type="Conv2d", shape=[16, 3, 3, 3],
                   numel=432, grad_norm=[v * 1e-3 for v in gn], grad_zero_frac=[0.0] * STEPS,
                   weight_norm=[3.0] * STEPS, update_ratio=[1e-6] * STEPS, grad_nonfinite=[0] * STEPS,
                   changed=True, grad_hist_first=_hist(0, 1e-3), grad_hist_last=_hist(0, 2e-3)),
        ParamProbe(name="features.0.bias", module="features.0", module_type="Conv2d", shape=[16], numel=16,
                   grad_norm=gn_gap, grad_zero_frac=[0.0] * STEPS, weight_norm=[0.5] * STEPS,
                   update_ratio=[1e-3] * STEPS, grad_nonfinite=[0] * STEPS, changed=True,
                   grad_hist_first=_hist(0, 1e-2), grad_hist_last=_hist(0, 1e-2)),
        ParamProbe(name="head.fc.weight", module="head.fc", module_type="Linear", shape=[10, 16], numel=160,
                   grad_norm=[0.0] + gn[1:], grad_zero_frac=[1.0] + [0.1] * (STEPS - 1), weight_norm=[2.0] * STEPS,
                   update_ratio=[0.0] + [0.3] * (STEPS - 1), grad_nonfinite=[0] * STEPS, changed=True,
                   grad_hist_first=None, grad_hist_last=_hist(0, 0.1)),
        ParamProbe(name="head.fc.bias", module="head.fc", module_type="Linear", shape=[10], numel=10,
                   grad_norm=gn, grad_zero_frac=[0.0] * STEPS, weight_norm=[0.1] * STEPS,
                   update_ratio=[1e-2] * STEPS, grad_nonfinite=[0] * STEPS, changed=True,
                   grad_hist_first=_hist(0, 0.05), grad_hist_last=_hist(0, 0.05)),
    ]
    heat = [[((r * 8 + c) % 11) / 10 for c in range(8)] for r in range(8)]
    return ProbeResult(
        config={"steps": STEPS, "lr": 1e-3, "optimizer": "adam", "loss": "ce", "batch_size": 16, "seed": 0,
                "device": "cpu", "data": "synthetic (one fixed batch)", "every": 1},
        steps=steps, loss=loss, loss_nonfinite_step=4, expected_initial_loss=math.log(10), num_classes=10,
        layers=layers, params=params,
        independence={"checked": True, "mixed": False, "max_change": 0.0, "method": "perturb the other samples"},
        output={"min": -3.1, "max": 4.2, "row_sum": 0.3, "prob_like": False, "log_prob_like": False,
                "target_min": 0.0, "target_max": 9.0, "target_signed": False, "head_activation": None},
        inputs={"dtype": "float32", "float": True, "mean": 0.01, "std": 1.0, "min": -4.0, "max": 4.1, "nan": 0,
                "synthetic": True, "integer_valued": False},
        attribution={"status": "complete", "reason": None, "method": "integrated_gradients", "target": 3,
                     "coverage": 0.61, "border_share": 0.22, "border_area": 0.36, "heatmap": heat,
                     "gradcam": [row[::-1] for row in heat]},
        seconds=1.25,
    )


def _report(probe: ProbeResult | None = None, findings: list[Finding] | None = None) -> Report:
    if findings is None:
        findings = [
            Finding(code="TRN004", name="dying-relu", severity="warning",
                    message="45% of the units of features.1 output 0 for every sample <always>",
                    location="features.1", evidence={"dead_share": 0.45}, fix="use LeakyReLU & a lower lr"),
            Finding(code="TRN003", name="non-finite-values", severity="error", message="loss NaN at step 4",
                    location=None, fix=None),
            Finding(code="TRN999", name="just-info", severity="info", message="fyi"),
        ]
    return Report(model=ModelInfo(path="m.pt", format="pytorch"), probe=_probe() if probe is None else probe,
                  findings=findings, diagnostics=[Diagnostic("info", "probe ran on cpu")])


class _Balance(HTMLParser):
    """Checks that every non-void element is closed, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


def _check_page(page: str) -> _Balance:
    assert page.startswith("<!DOCTYPE html>")
    p = _Balance()
    p.feed(page)
    p.close()
    assert not p.errors, p.errors[:5]
    assert not p.stack, p.stack
    # offline: nothing fetched
    for tag, attrs in p.tags:
        for key in ("src", "href", "xlink:href", "srcset", "action", "data"):
            val = attrs.get(key) or ""
            assert not re.match(r"\s*(https?:)?//", val), (tag, key, val)
        assert not (tag == "script" and "src" in attrs)
        assert not (tag == "link" and "stylesheet" in (attrs.get("rel") or ""))
    assert "@import" not in page and "url(" not in page
    # every SVG is well-formed XML on its own
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    for svg in svgs:
        ET.fromstring(svg)
    return p


def test_rich_page_is_well_formed_offline_and_complete() -> None:
    page = render_probe_html(_report().to_dict())
    p = _check_page(page)
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 10  # loss, 2 grad, 2 update, units, saturation, 2 maps, histograms
    for name in ("TRN004", "TRN003", "dying-relu", "features.0", "features.1", "head.act",
                 "features.0.weight", "features.0.bias", "head.fc.weight", "head.fc.bias", "m.pt"):
        assert name in page, name
    # strings from the doc are escaped
    assert "&lt;always&gt;" in page and "<always>" not in page
    assert "LeakyReLU &amp; a lower lr" in page
    # findings sorted by severity: error before warning before info
    assert page.index("TRN003") < page.index("TRN004") < page.index("TRN999")
    # config and losses in the header
    for text in ("adam", "synthetic (one fixed batch)", "2.3"):
        assert text in page
    # a None loss is a marked gap, the missing histogram and the unrecorded dead fraction say so
    assert "not finite / not recorded" in page
    assert "last step not recorded" in page
    assert "not recorded" in page
    # the update-ratio band and log decades
    assert "#e3f2e5" in page and "10⁻³" in page
    # the heat maps: grids of rects, one colour bar each
    assert page.count("1 (high)") == 2
    assert sum(1 for tag, _ in p.tags if tag == "rect") > 64
    assert "Grad-CAM" in page and "each output depends only on its own sample" in page
    assert len(page) < 400_000


def test_empty_probe_renders_not_recorded() -> None:
    empty = ProbeResult()
    doc = _report(probe=empty, findings=[]).to_dict()
    page = render_probe_html(doc)
    _check_page(page)
    assert "no findings" in page
    assert "loss not recorded" in page
    assert "attribution not recorded" in page
    assert "layers not recorded" in page and "parameters not recorded" in page
    assert "independence check not recorded" in page


def test_all_none_values_and_no_attribution() -> None:
    res = _probe()
    res.loss = [None] * STEPS
    res.attribution = None
    res.independence = {"checked": False, "reason": "batch of one sample"}
    res.first_nonfinite = {"step": 0, "kind": "loss", "where": "loss"}
    res.error, res.error_step = "the loss became nan at step 0; the run stopped", 0
    for lay in res.layers:
        lay.dead_frac = [None] * STEPS
        lay.zero_frac = [None] * STEPS
        lay.saturated_frac = []
        lay.hist_first = lay.hist_last = None
    for p in res.params:
        p.grad_norm = [None] * STEPS
        p.update_ratio = []
        p.grad_hist_first = p.grad_hist_last = None
    page = render_probe_html(_report(probe=res).to_dict())
    _check_page(page)
    assert "none of the 10 steps gave a finite loss" in page
    assert "attribution not recorded" in page
    assert "gradient norms not recorded" in page
    assert "update ratios not recorded" in page
    assert "dead/zero fractions not recorded" in page
    assert "histogram not recorded" in page
    assert "not checked" in page and "The run stopped" in page and "First NaN/Inf" in page
    # nothing was drawn as a zero bar
    assert ">0<" not in re.sub(r"<(?!svg)[^>]*>", "", "".join(re.findall(r"<svg\b.*?</svg>", page, flags=re.S)))


def test_malformed_and_odd_values_do_not_crash() -> None:
    doc = _report().to_dict()
    probe = doc["probe"]
    probe["layers"][0]["hist_first"] = {"edges": [0, 1], "counts": [1, 2, 3]}  # inconsistent
    probe["layers"][0]["order"] = None
    probe["params"][0]["grad_norm"] = [float("nan"), float("inf"), -1.0]
    probe["attribution"]["heatmap"] = [0.1, 0.5, 0.9, None]  # 1-D map
    probe["attribution"]["gradcam"] = [[]]
    probe["steps"] = None
    probe["config"] = None
    doc["model"] = {"path": "<script>alert(1)</script>", "format": "pytorch"}
    page = render_probe_html(doc)
    _check_page(page)
    assert "<script>" not in page
    assert "gradcam not recorded" in page
    assert render_probe_html({})  # not even a model
    _check_page(render_probe_html({"model": {"path": "x"}, "probe": None}))


def test_histogram_panels_are_capped() -> None:
    res = _probe()
    base = res.layers[0]
    res.layers = [LayerProbe(path=f"blocks.{i}", type="Linear", order=i, hist_first=base.hist_first,
                             hist_last=base.hist_last) for i in range(MAX_HIST_LAYERS + 6)]
    page = render_probe_html(_report(probe=res).to_dict())
    _check_page(page)
    assert "6 more layers left out" in page
    assert f"blocks.{MAX_HIST_LAYERS - 1}" in page


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (filtered) scanlines of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    return w, h, zlib.decompress(idat)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def screenshot(page: str, shot: Path, width: int = 1280, height: int = 2400) -> None:
    """A headless chromium screenshot of an HTML page (also how the report images in docs/img are made)."""
    exe = _chromium()
    assert exe is not None
    src = shot.with_suffix(".html")
    src.write_text(page, encoding="utf-8")
    subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={shot.parent / 'chromium-profile'}",
                    f"--screenshot={shot}", f"--window-size={width},{height}", src.as_uri()],
                   capture_output=True, timeout=60, check=False)


def assert_a_real_page(shot: Path, width: int = 1280, height: int = 2400) -> None:
    """The screenshot exists, has the window's size, and is a drawn page, not one colour."""
    assert shot.exists(), "chromium wrote no screenshot"
    data = shot.read_bytes()
    assert len(data) > 10_000
    w, h, raw = _png_pixels(data)
    assert (w, h) == (width, height)
    # not a single colour: many distinct byte values, and rows that differ from one another
    assert len(set(raw)) > 50
    stride = len(raw) // h
    assert len({raw[i * stride + 1:(i + 1) * stride] for i in range(0, h, 8)}) > 50


def test_headless_chromium_screenshot(tmp_path: Path) -> None:
    if _chromium() is None:
        pytest.skip("chromium not installed")
    shot = tmp_path / "probe.png"
    screenshot(render_probe_html(_report().to_dict()), shot)
    assert_a_real_page(shot)


def test_all_zero_gradients_are_drawn_not_hidden() -> None:
    res = _probe()
    for p in res.params:
        p.grad_norm = [0.0] * STEPS
        p.update_ratio = [0.0] * STEPS
    page = render_probe_html(_report(probe=res).to_dict())
    _check_page(page)
    assert "gradient norms not recorded" not in page and "update ratios not recorded" not in page
    assert "a value of exactly 0 that step" in page


def test_dead_units_chart_draws_only_layers_whose_units_can_die():
    """The dead-units chart has a bar group for each layer that counts dead units (the ReLU and the Sigmoid here),
    none for the convolution, whose dead share is not applicable: no 'not recorded' bar on every such layer."""
    page = render_probe_html(_report().to_dict())
    card = page[page.index("Dead units and zero outputs per layer"):]
    card = card[:card.index("</figure>") if "</figure>" in card else card.index("</div>")]
    assert "features.1" in card and "head.act" in card
    assert "features.0" not in card and "not recorded" not in card
    assert "Only the 2 of 3 layers" in page
