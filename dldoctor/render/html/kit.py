"""The HTML kit of the self-contained report pages (probe, profile): inline CSS and inline SVG, nothing fetched.

The page shell (`page_html`, with the shared style sheet), escaping (`esc`: every string from a report goes
through it), number formatting, cards, tables, the findings section, and the SVG chart primitives: line plots
(`svg_line`), horizontal bar charts (`svg_bars`), histograms (`svg_hist`) and heat maps (`svg_heatmap`). A value
that was not measured is drawn as such ("not recorded", or the page's own word for it), never as a 0.
The pages themselves are dldoctor/render/html/probe.py and dldoctor/render/html/profile.py.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

from dldoctor.errors import safe

__all__ = ["FIRST_COLOUR", "LAST_COLOUR", "MAX_POINTS", "NA", "PALETTE", "as_dict", "as_list", "cell_html", "esc",
           "figure_card", "findings_section", "fmt_value", "hist_ok", "is_num", "kv_table", "legend_html", "na_para",
           "nice_ticks", "page_html", "palette_colours", "shorten", "sig3", "subline", "svg_bars", "svg_heatmap",
           "svg_hist", "svg_line"]

NA = "not recorded"
MAX_POINTS = 600  # points per line (longer series are averaged in buckets)

_SEVERITIES = ("error", "warning", "info")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
_VIRIDIS = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
            (1.0, (253, 231, 37)))
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
FIRST_COLOUR, LAST_COLOUR = "#4c78a8", "#e45756"  # the first and the last recorded step of a histogram
_TEXT, _MUTED, _GRID, _AXIS = "#1d2430", "#6b7685", "#e6e9ef", "#9aa3af"

_CSS = """
:root{--fg:#1d2430;--muted:#5f6b7a;--line:#e3e7ee;--bg:#f5f6f8;--card:#fff;
--error:#c62828;--warning:#b45f06;--info:#1565c0;--ok:#2e7d32}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans",Arial,sans-serif}
main{max-width:1220px;margin:0 auto;padding:22px 24px 40px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:17px;margin:26px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:0 0 6px}
p{margin:4px 0 8px}
.sub{color:var(--muted);margin:0 0 12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:0;min-width:0}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:14px}
.grid3{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:14px}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:10px}
.hists .card{padding:8px 10px}
.hists h3{font-size:12px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin:0}
.hists .meta{font-size:11px;color:var(--muted);margin:0 0 2px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;white-space:nowrap}
table.kv th{width:38%}
td.num{font-variant-numeric:tabular-nums}
.na{color:var(--muted);font-style:italic}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;
white-space:nowrap}
.b-error{background:var(--error)}.b-warning{background:var(--warning)}.b-info{background:var(--info)}
.b-ok{background:var(--ok)}.b-muted{background:#8a94a3}
tr.s-error td:first-child{box-shadow:inset 4px 0 var(--error)}
tr.s-warning td:first-child{box-shadow:inset 4px 0 var(--warning)}
tr.s-info td:first-child{box-shadow:inset 4px 0 var(--info)}
tr.s-error{background:#fff6f6}tr.s-warning{background:#fffaf2}
.ev{color:var(--muted);font-size:12px;margin-top:2px}
.kpis{display:flex;gap:10px;flex-wrap:wrap;margin:10px 0 4px}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:7px 14px;min-width:130px}
.kpi span{display:block;color:var(--muted);font-size:12px}.kpi b{font-size:19px}
.cfg{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;margin:6px 0}
.cfg span{color:var(--muted)}
.alert{border-left:4px solid var(--error);background:#fdecea;padding:8px 12px;border-radius:6px;margin:10px 0}
.alert.warn{border-color:var(--warning);background:#fff4e5}
svg{max-width:100%;height:auto;display:block}
figcaption,.note{color:var(--muted);font-size:12px;margin-top:4px}
.legend{display:flex;flex-wrap:wrap;gap:2px 14px;font-size:12px;color:var(--muted);margin-top:4px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.ramp{display:inline-block;width:80px;height:10px;vertical-align:-1px;margin:0 5px;border-radius:2px;
background:linear-gradient(90deg,#440154,#3b528b,#21918c,#5ec962,#fde725)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
.maps{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
footer{color:var(--muted);font-size:12px;margin-top:30px}
"""


# -- small utilities ---------------------------------------------------------------------------


def esc(x: Any) -> str:
    """Text for HTML: markup escaped, control characters shown as escapes (the page may be printed to a terminal)."""
    return html.escape("" if x is None else safe(x), quote=True)


def as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else []


def is_num(x: Any) -> bool:
    """A finite real number (bools are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt_value(x: Any) -> str:
    """Compact text: 3 significant digits for floats, separators for ints, `not recorded` for None."""
    if x is None:
        return NA
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}" if abs(x) < 10**7 else sig3(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return sig3(x)
    if isinstance(x, (list, tuple)):
        items = [fmt_value(v) for v in x[:8]]
        return "[" + ", ".join(items) + (", …" if len(x) > 8 else "") + "]"
    if isinstance(x, dict):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in list(x.items())[:8]) + (", …" if len(x) > 8 else "")
    return str(x)


def sig3(x: float) -> str:
    if x == 0:
        return "0"
    s = f"{x:.3g}"
    if "e" in s:
        mant, ex = s.split("e")
        s = f"{mant}e{int(ex)}"
    return s


def cell_html(x: Any, na: str = NA) -> str:
    """An HTML table cell's content: escaped text, or a muted `not recorded` (or `na`)."""
    if x is None or (isinstance(x, (list, dict, str)) and len(x) == 0):
        return f'<span class="na">{esc(na)}</span>'
    return esc(fmt_value(x))


def shorten(s: str, n: int) -> str:
    """At most n characters, keeping the end (the informative part of a dotted module path)."""
    return s if len(s) <= n else "…" + s[-(n - 1):]


def _c(v: float) -> str:
    """An SVG coordinate."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _pow10(d: int) -> str:
    if d == 0:
        return "1"
    if d == 1:
        return "10"
    return "10" + str(d).translate(_SUPERSCRIPT)


def _viridis(t: float) -> str:
    t = min(1.0, max(0.0, t))
    for (a, ca), (b, cb) in zip(_VIRIDIS, _VIRIDIS[1:]):
        if t <= b:
            f = (t - a) / (b - a)
            rgb = [round(x + (y - x) * f) for x, y in zip(ca, cb)]
            return "#%02x%02x%02x" % tuple(rgb)
    return "#fde725"


def palette_colours(n: int) -> list[str]:
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    return [_viridis(0.9 * i / max(1, n - 1)) for i in range(n)]


def na_para(msg: str = NA) -> str:
    return f'<p class="na">{esc(msg)}</p>'


def figure_card(title: str, body: str, caption: str = "", legend: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="card"><h3>{esc(title)}</h3>{body}{legend}{cap}</figure>'


def legend_html(items: Iterable[tuple[str, str]]) -> str:
    parts = [f'<span><i class="sw" style="background:{c}"></i>{esc(name)}</span>' for name, c in items]
    return f'<div class="legend">{"".join(parts)}</div>' if parts else ""


def kv_table(d: Any, order: Sequence[str] = (), labels: dict[str, str] | None = None, na: str = NA) -> str:
    d = as_dict(d)
    if not d:
        return na_para(na)
    keys = [k for k in order if k in d] + [k for k in d if k not in order]
    labels = labels or {}
    rows = "".join(f"<tr><th>{esc(labels.get(k, k.replace('_', ' ')))}</th>"
                   f"<td class=num>{cell_html(d[k], na)}</td></tr>" for k in keys)
    return f'<table class="kv">{rows}</table>'

# -- scales and axes ---------------------------------------------------------------------------


class _Scale:
    """Maps a data interval to a pixel interval, linearly or in log10."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False) -> None:
        self.log = log
        self.lo, self.hi = (lo, hi) if not log else (math.log10(lo), math.log10(hi))
        if self.hi == self.lo:
            self.hi = self.lo + 1
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.a + (t - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> tuple[float, float, list[float]]:
    """Round bounds and evenly spaced ticks covering [lo, hi]."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    a, b = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    ticks = [a + i * step for i in range(int(round((b - a) / step)) + 1)]
    return a, b, [round(t, 12) for t in ticks]


def _log_bounds(values: Iterable[Any]) -> tuple[int, int] | None:
    """Whole decades covering the positive values."""
    pos = [v for v in values if is_num(v) and v > 0]
    if not pos:
        return None
    lmin = math.log10(min(pos))
    lo, hi = math.floor(lmin), math.ceil(math.log10(max(pos)))
    if lmin - lo < 0.3:  # keep the smallest value off the floor, so its bar or line stays visible
        lo -= 1
    if hi == lo:
        hi += 1
    return lo, hi


def _log_ticks(dlo: int, dhi: int) -> list[int]:
    every = max(1, math.ceil((dhi - dlo) / 8))
    return list(range(dlo, dhi + 1, every))


def _text(x: float, y: float, s: str, anchor: str = "start", size: float = 11, fill: str = _TEXT,
          extra: str = "") -> str:
    return (f'<text x="{_c(x)}" y="{_c(y)}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{extra}>'
            f"{esc(s)}</text>")


def _xaxis(sx: _Scale, ticks: list[tuple[float, str]], top: float, bottom: float, label: str,
           x0: float, x1: float) -> list[str]:
    out = []
    for v, lab in ticks:
        x = sx(v)
        out.append(f'<line x1="{_c(x)}" y1="{_c(top)}" x2="{_c(x)}" y2="{_c(bottom)}" stroke="{_GRID}"/>')
        out.append(_text(x, bottom + 14, lab, "middle", 10.5, _MUTED))
    out.append(f'<line x1="{_c(x0)}" y1="{_c(bottom)}" x2="{_c(x1)}" y2="{_c(bottom)}" stroke="{_AXIS}"/>')
    if label:
        out.append(_text((x0 + x1) / 2, bottom + 30, label, "middle", 11, _MUTED))
    return out


def _yaxis(sy: _Scale, ticks: list[tuple[float, str]], left: float, right: float, label: str,
           y0: float, y1: float) -> list[str]:
    out = []
    for v, lab in ticks:
        y = sy(v)
        out.append(f'<line x1="{_c(left)}" y1="{_c(y)}" x2="{_c(right)}" y2="{_c(y)}" stroke="{_GRID}"/>')
        out.append(_text(left - 5, y + 3.5, lab, "end", 10.5, _MUTED))
    out.append(f'<line x1="{_c(left)}" y1="{_c(y0)}" x2="{_c(left)}" y2="{_c(y1)}" stroke="{_AXIS}"/>')
    if label:
        cy = (y0 + y1) / 2
        out.append(_text(12, cy, label, "middle", 11, _MUTED, f' transform="rotate(-90 12 {_c(cy)})"'))
    return out


def _svg(w: float, h: float, body: list[str], label: str) -> str:
    return (f'<svg viewBox="0 0 {_c(w)} {_c(h)}" width="{_c(w)}" height="{_c(h)}" role="img" '
            f'aria-label="{esc(label)}">{"".join(body)}</svg>')


def _value_axis(values: list[float], log: bool, extra: Sequence[float] = (),
                fixed: tuple[float, float] | None = None) -> tuple[float, float, list[tuple[float, str]]] | None:
    """Domain and labelled ticks for a value axis, or None when nothing can be drawn."""
    if fixed is not None:
        lo, hi, ticks = nice_ticks(fixed[0], fixed[1], 5)
        return fixed[0], fixed[1], [(t, sig3(t)) for t in ticks if fixed[0] <= t <= fixed[1]]
    if log:
        b = _log_bounds(list(values) + list(extra))
        if b is None:
            if not any(is_num(v) for v in values):
                return None
            b = (-3, 0)  # only zeros (or negatives): any decades will do, they sit on the floor
        return 10.0 ** b[0], 10.0 ** b[1], [(10.0 ** d, _pow10(d)) for d in _log_ticks(*b)]
    vals = [v for v in list(values) + list(extra) if is_num(v)]
    if not vals:
        return None
    lo, hi, ticks = nice_ticks(min(vals), max(vals), 5)
    return lo, hi, [(t, sig3(t)) for t in ticks]

# -- plots -------------------------------------------------------------------------------------


def _thin(xs: list[float], ys: list[Any], n: int = MAX_POINTS) -> tuple[list[float], list[Any]]:
    """At most ~n points: bucket means of the finite values (a bucket with none stays a gap)."""
    if len(ys) <= n:
        return xs, ys
    size = math.ceil(len(ys) / n)
    ox, oy = [], []
    for i in range(0, len(ys), size):
        fin = [(x, y) for x, y in zip(xs[i:i + size], ys[i:i + size]) if is_num(y)]
        ox.append(xs[i])
        oy.append(sum(y for _, y in fin) / len(fin) if fin else None)
    return ox, oy


def svg_line(series: list[dict[str, Any]], *, xlabel: str, ylabel: str, log: bool = False,
             band: tuple[float, float] | None = None, hline: tuple[float, str] | None = None,
             gaps: Sequence[tuple[float, float]] = (), w: int = 560, h: int = 250,
             label: str = "line plot", xlog: bool = False, xticks: Sequence[float] = (),
             vline: tuple[float, str] | None = None) -> str | None:
    """Lines over steps. series: {name, xs, ys, colour, markers}; None (and ≤ 0 on a log axis) is a gap.
    xlog: a log x axis (positive xs); xticks: the x ticks to label (else round integers); vline: (x, label)
    drawn dashed; markers: a dot on every point.

    Returns None when no series has a single drawable value."""
    ml, mr, mt, mb = 58, 16, 10, 42
    ok = (lambda v: is_num(v) and v > 0) if log else is_num
    ys_all = [y for s in series for y in s["ys"] if is_num(y)]
    xs_all = [x for s in series for x in s["xs"]]
    if not ys_all or not xs_all:
        return None
    extra = list(band or ()) + ([hline[0]] if hline and is_num(hline[0]) and (not log or hline[0] > 0) else [])
    ax = _value_axis(ys_all, log, extra)
    if ax is None:
        return None
    ylo, yhi, yticks = ax
    if xticks:
        xlo, xhi, xt = min(min(xticks), min(xs_all)), max(max(xticks), max(xs_all)), list(xticks)
    else:
        xlo, xhi, xt = nice_ticks(min(xs_all), max(xs_all), 6, integer=True)
    x0, x1, y0, y1 = ml, w - mr, h - mb, mt
    sx, sy = _Scale(xlo, xhi, x0, x1, xlog), _Scale(ylo, yhi, y0, y1, log)
    out = [f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fff"/>']
    if band:
        ya, yb = sy(max(band[1], ylo)), sy(max(band[0], ylo))
        ya, yb = max(min(ya, y0), y1), max(min(yb, y0), y1)
        out.append(f'<rect x="{x0}" y="{_c(ya)}" width="{x1 - x0}" height="{_c(yb - ya)}" fill="#e3f2e5"/>')
    out += _yaxis(sy, yticks, x0, x1, ylabel, y0, y1)
    out += _xaxis(sx, [(t, sig3(t)) for t in xt], y1, y0, xlabel, x0, x1)
    for a, b in gaps:
        ga, gb = sx(a - 0.5), sx(b + 0.5)
        ga, gb = max(ga, x0), min(gb, x1)
        out.append(f'<rect x="{_c(ga)}" y="{y1}" width="{_c(max(gb - ga, 1.5))}" height="{y0 - y1}" '
                   f'fill="#d62728" fill-opacity="0.13"><title>{esc(_gap_text(a, b))}</title></rect>')
        out.append(f'<path d="M{_c((ga + gb) / 2)} {y0 - 1}l-3.5 -7h7z" fill="#d62728"/>')
    if hline and is_num(hline[0]) and (not log or hline[0] > 0):
        y = sy(hline[0])
        out.append(f'<line x1="{x0}" y1="{_c(y)}" x2="{x1}" y2="{_c(y)}" stroke="#555" stroke-dasharray="5 4"/>')
        out.append(_text(x1 - 4, y - 4, hline[1], "end", 10.5, "#444"))
    if vline and is_num(vline[0]):
        x = sx(vline[0])
        out.append(f'<line x1="{_c(x)}" y1="{y1}" x2="{_c(x)}" y2="{y0}" stroke="#555" stroke-dasharray="5 4"/>')
        out.append(_text(x + 4 if x < (x0 + x1) / 2 else x - 4, y1 + 12, vline[1],
                         "start" if x < (x0 + x1) / 2 else "end", 10.5, "#444"))
    for s in series:
        xs, ys = _thin(list(s["xs"]), list(s["ys"]))
        col, seg, segs = s["colour"], [], []
        for x, y in zip(xs, ys):
            if ok(y):
                seg.append((x, y))
            else:
                if seg:
                    segs.append(seg)
                seg = []
                if log and is_num(y) and y <= 0:  # a real zero: mark it on the floor of the log axis
                    out.append(f'<path d="M{_c(sx(x))} {y0 - 1}l-3 -6h6z" fill="{col}"/>')
        if seg:
            segs.append(seg)
        parts = [f"<title>{esc(s['name'])}</title>"]
        for sg in segs:
            if s.get("markers") and len(sg) > 1:
                parts += [f'<circle cx="{_c(sx(x))}" cy="{_c(sy(y))}" r="3.2" fill="{col}"/>' for x, y in sg]
            if len(sg) == 1:
                parts.append(f'<circle cx="{_c(sx(sg[0][0]))}" cy="{_c(sy(sg[0][1]))}" r="2.5" fill="{col}"/>')
            else:
                pts = " ".join(f"{_c(sx(x))},{_c(sy(y))}" for x, y in sg)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.6" '
                             f'stroke-linejoin="round"/>')
        out.append(f"<g>{''.join(parts)}</g>")
    return _svg(w, h, out, label)


def _gap_text(a: float, b: float) -> str:
    return f"step {sig3(a)}: not finite / not recorded" if a == b else \
        f"steps {sig3(a)}–{sig3(b)}: not finite / not recorded"


def svg_bars(rows: list[tuple[str, str, list[Any]]], *, names: Sequence[str], colours: Sequence[str],
             log: bool = False, fixed: tuple[float, float] | None = None,
             band: tuple[float, float] | None = None, xlabel: str = "", w: int = 560, label_w: int | None = None,
             label: str = "bar chart", row_colours: Sequence[str] = (), texts: Sequence[str] = (),
             vline: tuple[float, str] | None = None) -> str | None:
    """Horizontal bars, one row per item (label, tooltip, one value per series). None says `not recorded`;
    0 on a log axis says `0`. With one series, row_colours and texts (the words beside each bar, or in place
    of a missing one) can be given per row; vline: (value, label) drawn dashed. Returns None when no value
    can be drawn."""
    k = len(names)
    bar_h = 12 if k == 1 else 9
    row_h = k * bar_h + 6
    if label_w is None:  # room for the longest label, within limits (longer ones keep their end)
        label_w = int(min(220, max(60, 6.4 * max((len(lab) for lab, _, _ in rows), default=4) + 16)))
    ml, mr, mt, mb = label_w, max(44, int(5.4 * max(map(len, texts), default=0)) + 8), 20 if vline else 6, 38
    vals = [v for _, _, vs in rows for v in vs]
    if not any(is_num(v) for v in vals):
        return None
    ax = _value_axis([v for v in vals if is_num(v)], log, list(band or ()) + ([vline[0]] if vline else []), fixed)
    if ax is None:
        return None
    lo, hi, ticks = ax
    h = mt + row_h * len(rows) + mb
    x0, x1, y0, y1 = ml, w - mr, h - mb, mt
    sx = _Scale(lo, hi, x0, x1, log)
    out = []
    if band:
        ba, bb = sx(max(band[0], lo)), sx(min(band[1], hi))
        if bb > ba:
            out.append(f'<rect x="{_c(ba)}" y="{y1}" width="{_c(bb - ba)}" height="{y0 - y1}" fill="#e3f2e5"/>')
    out += _xaxis(sx, ticks, y1, y0, xlabel, x0, x1)
    for i, (lab, tip, vs) in enumerate(rows):
        top = mt + i * row_h + 3.5
        g = [f"<title>{esc(tip)}</title>",
             _text(x0 - 6, top + (row_h - 6) / 2 + 4, shorten(lab, int(label_w / 6.3)), "end", 11, _TEXT)]
        for j, v in enumerate(vs):
            by = top + j * bar_h
            col = row_colours[i] if row_colours else colours[j]
            txt = texts[i] if texts else None
            if not is_num(v):
                txt = txt or (NA if v is None else fmt_value(v))
                g.append(_text(x0 + 4, by + bar_h - 2, txt, "start", 9, _MUTED, ' font-style="italic"'))
                continue
            if log and v <= 0:
                g.append(_text(x0 + 4, by + bar_h - 2, sig3(v), "start", 9, col))
                continue
            xe = max(x0, min(sx(v), x1))
            g.append(f'<rect x="{x0}" y="{_c(by)}" width="{_c(max(xe - x0, 1))}" height="{bar_h - 1}" '
                     f'fill="{col}"/>')
            g.append(_text(xe + 3, by + bar_h - 2, txt or sig3(v), "start", 9, _MUTED))
        out.append(f"<g>{''.join(g)}</g>")
    out.append(f'<line x1="{x0}" y1="{y1}" x2="{x0}" y2="{y0}" stroke="{_AXIS}"/>')
    if vline and is_num(vline[0]):
        x = sx(vline[0])
        out.append(f'<line x1="{_c(x)}" y1="{y1}" x2="{_c(x)}" y2="{y0}" stroke="#555" stroke-dasharray="5 4"/>')
        out.append(_text(x, y1 - 6, vline[1], "middle", 10.5, "#444"))
    return _svg(w, h, out, label)


def hist_ok(hd: Any) -> tuple[list[float], list[float]] | None:
    """(edges, counts) of a drawable histogram, or None."""
    hd = as_dict(hd)
    edges, counts = as_list(hd.get("edges")), as_list(hd.get("counts"))
    if not counts or len(edges) != len(counts) + 1:
        return None
    if not all(is_num(e) for e in edges) or not all(is_num(c) and c >= 0 for c in counts) or sum(counts) <= 0:
        return None
    return [float(e) for e in edges], [float(c) for c in counts]


def svg_hist(first: Any, last: Any, w: int = 270, h: int = 104, label: str = "histogram",
             marks: Sequence[tuple[float, str, str]] = ()) -> str | None:
    """First (filled) and last (outline) recorded step overlaid, as densities so differing bins compare.
    marks: (value, label, colour) drawn as vertical lines, their labels stacked at the top."""
    hs = [(hist_ok(first), FIRST_COLOUR, True), (hist_ok(last), LAST_COLOUR, False)]
    hs = [(hv, c, fill) for hv, c, fill in hs if hv is not None]
    if not hs:
        return None
    marks = [m for m in marks if is_num(m[0])]
    ml, mr, mt, mb = 8, 8, 6 + 11 * len(marks), 18
    lo = min([hv[0][0] for hv, _, _ in hs] + [m[0] for m in marks])
    hi = max([hv[0][-1] for hv, _, _ in hs] + [m[0] for m in marks])
    if hi <= lo:
        hi = lo + 1
    dens = []
    for (edges, counts), _, _ in hs:
        tot = sum(counts)
        dens.append([c / tot / max(b - a, 1e-300) for a, b, c in zip(edges, edges[1:], counts)])
    top = max(max(d) for d in dens) or 1.0
    x0, x1, y0, y1 = ml, w - mr, h - mb, mt
    sx, sy = _Scale(lo, hi, x0, x1), _Scale(0, top, y0, y1)
    out = [f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="{_AXIS}"/>']
    if lo < 0 < hi:
        out.append(f'<line x1="{_c(sx(0))}" y1="{y1}" x2="{_c(sx(0))}" y2="{y0}" stroke="{_GRID}"/>')
    for ((edges, _), col, fill), d in zip(hs, dens):
        path = [f"M{_c(sx(edges[0]))} {y0}"]
        for a, b, v in zip(edges, edges[1:], d):
            path.append(f"V{_c(sy(v))}H{_c(sx(b))}")
        path.append(f"V{y0}")
        if fill:
            out.append(f'<path d="{"".join(path)}Z" fill="{col}" fill-opacity="0.35" stroke="{col}" '
                       f'stroke-width="0.8"/>')
        else:
            out.append(f'<path d="{"".join(path)}" fill="none" stroke="{col}" stroke-width="1.4"/>')
    for k, (v, name, col) in enumerate(marks):
        x, right = sx(v), sx(v) > (x0 + x1) / 2
        out.append(f'<line x1="{_c(x)}" y1="{_c(y1 - 11 * (len(marks) - k) + 3)}" x2="{_c(x)}" y2="{y0}" '
                   f'stroke="{col}" stroke-width="1.4"/>')
        out.append(_text(x - 3 if right else x + 3, y1 - 11 * (len(marks) - k - 1) - 2, name,
                         "end" if right else "start", 10, col))
    labs = [(lo, "start"), (hi, "end")]
    if lo < 0 < hi and sx(0) - x0 > 30 and x1 - sx(0) > 30:
        labs.append((0.0, "middle"))
    for v, anchor in labs:
        v = 0.0 if abs(v) < 1e-9 * (hi - lo) else v  # float dust such as -1.1e-16
        out.append(_text(sx(v), h - 5, sig3(v), anchor, 10, _MUTED))
    return _svg(w, h, out, label)


def _grid_ok(grid: Any) -> list[list[float | None]] | None:
    """A heat map as rows of values (a flat list is one row), or None when it is not one."""
    g = as_list(grid)
    if not g:
        return None
    if all(is_num(v) for v in g):
        g = [g]
    rows = []
    for r in g:
        r = as_list(r)
        if not r:
            return None
        rows.append([float(v) if is_num(v) else None for v in r])
    if not any(v is not None for r in rows for v in r):
        return None
    return rows[:64]


def svg_heatmap(grid: Any, size: int = 230, label: str = "heat map") -> str | None:
    """Cells coloured by value in [0, 1] (viridis), equal runs merged into one rect, with a colour bar."""
    rows = _grid_ok(grid)
    if rows is None:
        return None
    nr, nc = len(rows), min(64, max(len(r) for r in rows))
    if nr == 1:  # a 1-D map: a strip
        cw, ch = size / nc, 28.0
    else:
        cw = ch = size / max(nr, nc)
    gw, gh = cw * nc, ch * nr
    levels = 48
    by_colour: dict[str, list[str]] = {}
    for i, r in enumerate(rows):
        j = 0
        while j < nc:
            v = r[j] if j < len(r) else None
            q = None if v is None else round(min(1.0, max(0.0, v)) * (levels - 1))
            k = j + 1
            while k < nc:
                v2 = r[k] if k < len(r) else None
                q2 = None if v2 is None else round(min(1.0, max(0.0, v2)) * (levels - 1))
                if q2 != q:
                    break
                k += 1
            col = "#d0d4da" if q is None else _viridis(q / (levels - 1))
            # in cell units (scaled below), widened a hair so neighbouring cells leave no seam
            by_colour.setdefault(col, []).append(f'<rect x="{j}" y="{i}" width="{k - j}.1" height="1.1"/>')
            j = k
    out = [f'<g transform="scale({cw:.4f} {ch:.4f})" shape-rendering="crispEdges">']
    out += [f'<g fill="{col}">{"".join(rs)}</g>' for col, rs in by_colour.items()]
    out.append(f'</g><rect x="0" y="0" width="{_c(gw)}" height="{_c(gh)}" fill="none" stroke="{_AXIS}"/>')
    bx, bh, steps = gw + 14, max(gh, 60.0), 32
    for s in range(steps):
        t = 1 - (s + 0.5) / steps
        out.append(f'<rect x="{_c(bx)}" y="{_c(s * bh / steps)}" width="12" height="{_c(bh / steps + 0.4)}" '
                   f'fill="{_viridis(t)}"/>')
    out.append(f'<rect x="{_c(bx)}" y="0" width="12" height="{_c(bh)}" fill="none" stroke="{_AXIS}"/>')
    for t, lab in ((1.0, "1 (high)"), (0.5, "0.5"), (0.0, "0")):
        out.append(_text(bx + 16, (1 - t) * bh + (9 if t == 1.0 else 0 if t == 0.0 else 4), lab, "start", 10,
                         _MUTED))
    return _svg(bx + 64, max(gh, bh) + 2, out, label)


# -- the page ---------------------------------------------------------------------------------


def subline(model: dict, *extra: Any) -> str:
    """The model's path, format and hash, then any further non-empty items, joined and escaped."""
    return " · ".join(esc(x) for x in (model.get("path"), model.get("format"),
                                       f"sha256 {str(model['sha256'])[:12]}" if model.get("sha256") else None,
                                       *extra) if x)


def findings_section(doc: dict) -> str:
    fs = [as_dict(f) for f in as_list(doc.get("findings"))]
    rank = {s: i for i, s in enumerate(_SEVERITIES)}
    fs = [f for _, f in sorted(enumerate(fs), key=lambda t: (rank.get(t[1].get("severity"), 9), t[0]))]
    counts = {s: sum(1 for f in fs if f.get("severity") == s) for s in _SEVERITIES}
    summary = " ".join(f'<span class="badge b-{s}">{counts[s]} {s}</span>' for s in _SEVERITIES if counts[s])
    head = f"<h2>Findings {summary}</h2>"
    if not fs:
        return head + '<div class="card"><p class="na">no findings</p></div>'
    rows = []
    for f in fs:
        sev = str(f.get("severity") or "info")
        cls = sev if sev in _SEVERITIES else "info"
        ev = as_dict(f.get("evidence"))
        ev_html = ""
        if ev:
            ev_html = '<div class="ev">' + esc(shorten(fmt_value(ev), 300)) + "</div>"
        loc = f"<code>{esc(f.get('location'))}</code>" if f.get("location") else '<span class="na">-</span>'
        fix = esc(f.get("fix")) if f.get("fix") else '<span class="na">-</span>'
        rows.append(f'<tr class="s-{cls}"><td><span class="badge b-{cls}">{esc(sev)}</span></td>'
                    f"<td><code>{esc(f.get('code'))}</code></td><td>{esc(f.get('name'))}</td><td>{loc}</td>"
                    f"<td>{esc(f.get('message'))}{ev_html}</td><td>{fix}</td></tr>")
    return (head + '<div class="card"><table><thead><tr><th>severity</th><th>code</th><th>name</th>'
            "<th>location</th><th>message</th><th>fix</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


def page_html(doc: dict, title: str, body: list[str], css: str = "") -> str:
    """The HTML document around the sections: inline CSS (the shared sheet plus `css`) and a footer."""
    schema = doc.get("schema_version")
    foot = (f"<footer>Generated by dldoctor{esc(f' (report schema {schema})' if schema else '')}. "
            "Self-contained: all plots are inline SVG.</footer>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}{css}</style></head>"
            f"<body><main>{''.join(body)}{foot}</main></body></html>\n")
