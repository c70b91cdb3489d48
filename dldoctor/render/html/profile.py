"""A `dldoctor profile` report as one self-contained HTML page: inline CSS and inline SVG, nothing fetched.

`render_profile_html(report.to_dict())` takes the JSON form of a report that carries a profile
(`doc["profile"]` is `ProfileResult.to_dict()`, see dldoctor/report/profile_types.py) and draws it:
the configuration and headline figures, findings, the latency distribution per batch size, the
batch-size sweep, the per-op and per-module breakdown, the what-ifs that were run for real, and the
notes. It is drawn with the HTML kit it shares with the probe page (dldoctor/render/html/kit.py). Every
string from the doc is escaped; a figure that was not measured says "not measured", never a 0 bar.
"""
from __future__ import annotations

import math
from typing import Any

from dldoctor.render.html.kit import (as_dict, as_list, cell_html, esc, figure_card, findings_section, fmt_value,
                                      is_num, kv_table, legend_html, na_para, nice_ticks, page_html, shorten, sig3,
                                      subline, svg_bars, svg_hist, svg_line)
from dldoctor.report.units import nbytes

__all__ = ["render_profile_html"]

NM = "not measured"
# The defaults of [tool.dldoctor.profile] max-cv (PRF002) and min-speedup (PRF001), used when neither the run's
# config nor the caller gives them (tests/render/test_render_table.py holds them to rules/options.py's ProfileOptions).
MAX_CV = 0.1
MIN_SPEEDUP = 1.1
TOP_K = 20  # bars per breakdown chart
HIST_BINS = 16
_BOUND_COLOURS = {"compute": "#4c78a8", "memory": "#f58518", None: "#9aa3af"}
_MARKS = (("p50", "#1d2430"), ("p90", "#b45f06"), ("p99", "#c62828"))
_CFG_KEYS = ("device", "dtype", "threads", "warmup", "iters", "batch_sizes", "runtime")

_CSS = """
.kpi small{color:var(--muted);font-size:12px;font-weight:400;margin-left:4px}
.ok{color:var(--ok);font-weight:600}
ul.notes{margin:4px 0;padding-left:20px}
.hists.lat{grid-template-columns:repeat(auto-fill,minmax(370px,1fr))}
details summary{cursor:pointer;color:var(--muted);font-size:12px;margin-top:6px}
"""


# -- numbers -----------------------------------------------------------------------------------


def _na(msg: str = NM) -> str:
    return f'<span class="na">{esc(msg)}</span>'


def _time_unit(values: list[Any]) -> tuple[float, str]:
    """A factor and unit (s, ms or µs) that suit the largest of some durations in seconds."""
    top = max((abs(v) for v in values if is_num(v)), default=0.0)
    if top >= 1:
        return 1.0, "s"
    if top >= 1e-3 or top == 0:
        return 1e3, "ms"
    return 1e6, "µs"


def _secs(x: Any) -> str | None:
    """A duration in seconds as text, or None when it was not measured."""
    if not is_num(x):
        return None
    f, unit = _time_unit([x])
    return f"{sig3(x * f)} {unit}"


def _si(x: Any, unit: str) -> str | None:
    """3 significant digits and an SI prefix (1.2 TFLOP/s), or None when it was not measured."""
    if not is_num(x):
        return None
    for div, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{sig3(x / div)} {prefix}{unit}"
    return f"{sig3(x)} {unit}"


def _from_zero(values: list[Any]) -> tuple[float, float] | None:
    """A value axis from 0 to a round number above the largest value, so bar lengths compare."""
    top = max((v for v in values if is_num(v)), default=0.0)
    return (0.0, nice_ticks(0.0, top, 5)[1]) if top > 0 else None


def _pct(x: Any) -> str | None:
    return f"{x * 100:.1f}%" if is_num(x) else None


def _show(text: str | None) -> str:
    """Escaped text, or a muted `not measured`."""
    return _na() if text is None else esc(text)


def _thresholds(cfg: dict, max_cv: float | None, min_speedup: float | None) -> tuple[float, float]:
    """(max cv, min speedup): from the run's config where it carries them, else the caller's (the configuration
    that judged the report), else the rule defaults."""
    cv, sp = cfg.get("max_cv"), cfg.get("min_speedup")
    cv = cv if is_num(cv) else max_cv if is_num(max_cv) else MAX_CV
    sp = sp if is_num(sp) else min_speedup if is_num(min_speedup) else MIN_SPEEDUP
    return float(cv), float(sp)


def _latency(prof: dict) -> list[dict]:
    """One entry per batch size, smallest first (entries without a batch size last)."""
    lat = [as_dict(x) for x in as_list(prof.get("latency"))]
    return sorted(lat, key=lambda s: s.get("batch_size") if is_num(s.get("batch_size")) else math.inf)


def _is_noisy(s: dict, max_cv: float) -> bool:
    return bool(s.get("noisy")) or (is_num(s.get("cv")) and s["cv"] > max_cv)


# -- header ------------------------------------------------------------------------------------


def _header(doc: dict, prof: dict) -> str:
    model = as_dict(doc.get("model"))
    name = model.get("name") or model.get("path") or "model"
    cfg = as_dict(prof.get("config"))
    sub = subline(model, prof.get("device_name") or (doc.get("device") and f"device {doc.get('device')}"))
    items = [(k, cfg.get(k)) for k in _CFG_KEYS] + [(k, v) for k, v in cfg.items() if k not in _CFG_KEYS]
    cfg_html = "".join(f"<div><span>{esc(k.replace('_', ' '))}</span> {cell_html(v, NM)}</div>" for k, v in items)
    lat = _latency(prof)
    first = lat[0] if lat else {}
    best_b = prof.get("best_batch_size")
    best = next((s for s in lat if s.get("batch_size") == best_b), {}) if best_b is not None else {}
    ach, peak = prof.get("achieved_flops_per_s"), prof.get("peak_flops_per_s")
    flops = _si(ach, "FLOP/s")
    if flops and is_num(peak) and peak > 0:
        flops += f" of {_si(peak, 'FLOP/s')} ({ach / peak:.0%})"
    elif flops:
        flops += " (peak not measured)"
    over = prof.get("overhead")
    kpis = [(f"p50 latency, batch {fmt_value(first.get('batch_size'))}" if first else "p50 latency",
             _secs(first.get("p50"))),
            (f"throughput, batch {fmt_value(best_b)}" if best else "throughput at the best batch",
             f"{sig3(best['throughput'])} samples/s" if is_num(best.get("throughput")) else None),
            ("best batch size", fmt_value(best_b) if is_num(best_b) else None),
            ("achieved FLOP/s (share of peak)", flops),
            ("profiler overhead", f"{sig3(over)}×" if is_num(over) else None)]
    kpi_html = "".join(f'<div class="kpi"><span>{esc(k)}</span><b>{_show(v)}</b></div>' for k, v in kpis)
    out = [f"<header><h1>dldoctor profile: {esc(name)}</h1>",
           f'<p class="sub">{sub}</p>' if sub else "",
           f'<div class="cfg">{cfg_html}</div>' if cfg else f'<p class="na">profile config {NM}</p>',
           f'<div class="kpis">{kpi_html}</div>', "</header>"]
    if prof.get("error"):
        out.append(f'<div class="alert"><b>The profile stopped:</b> {esc(prof.get("error"))}</div>')
    return "".join(out)


# -- latency -----------------------------------------------------------------------------------


def _bins(values: list[float], n: int = HIST_BINS) -> dict | None:
    """Edges and counts of a histogram of the values (None when there are none)."""
    if not values:
        return None
    lo, hi = min(values), max(values)
    if hi <= lo:
        pad = abs(lo) * 0.01 or 1e-9
        lo, hi = lo - pad, hi + pad
    n = max(4, min(n, len(values)))
    step = (hi - lo) / n
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int((v - lo) / step))] += 1
    return {"edges": [lo + i * step for i in range(n + 1)], "counts": counts}


def _latency_panel(s: dict, max_cv: float) -> str:
    b = fmt_value(s.get("batch_size"))
    samples = [v for v in as_list(s.get("samples")) if is_num(v)]
    f, unit = _time_unit(samples + [s.get(k) for k, _ in _MARKS])
    marks = [(s[k] * f, k, col) for k, col in _MARKS if is_num(s.get(k))]
    svg = svg_hist(_bins([v * f for v in samples]), None, w=350, h=130, marks=marks,
                   label=f"latency distribution at batch {b}")
    badge = ' <span class="badge b-warning">noisy</span>' if _is_noisy(s, max_cv) else ""
    cv = f"cv {_pct(s.get('cv'))}" if is_num(s.get("cv")) else f"cv {NM}"
    meta = f"{len(samples)} timed runs · {unit} · {cv}" if samples else f"timed runs {NM} · {cv}"
    if svg is None:
        why = f": {s.get('error')}" if s.get("error") else ""
        svg = na_para(f"samples {NM}{why}")
    return (f'<div class="card"><h3>batch {esc(b)}{badge}</h3><div class="meta">{esc(meta)}</div>{svg}</div>')


def _latency_table(lat: list[dict], max_cv: float) -> str:
    cols = ("batch", "runs", "warmup", "mean", "std", "min", "p50", "p90", "p99", "max", "cv", "throughput",
            "peak memory", "reserved")
    rows = []
    for s in lat:
        cells = [cell_html(s.get("batch_size"), NM), cell_html(s.get("iters"), NM), cell_html(s.get("warmup"), NM)]
        thr = s.get("throughput")
        texts = [_secs(s.get(k)) for k in ("mean", "std", "min", "p50", "p90", "p99", "max")]
        texts += [_pct(s.get("cv")), f"{sig3(thr)}/s" if is_num(thr) else None,
                  nbytes(s["peak_memory"]) if is_num(s.get("peak_memory")) else None,
                  nbytes(s["reserved_memory"]) if is_num(s.get("reserved_memory")) else None]
        values = [_show(t) for t in texts]
        if _is_noisy(s, max_cv):
            values[7] += ' <span class="badge b-warning">noisy</span>'
        row = "".join(f"<td class=num>{c}</td>" for c in cells)
        if all(t is None for t in texts) and not _is_noisy(s, max_cv):  # one muted cell, not a row of them
            row += f'<td colspan="{len(cols) - len(cells)}">{_na()}</td>'
        else:
            row += "".join(f"<td class=num>{v}</td>" for v in values)
        if s.get("error"):
            row += f'</tr><tr class="s-error"><td colspan="{len(cols)}">batch {esc(fmt_value(s.get("batch_size")))} ' \
                   f"failed: {esc(s.get('error'))}</td>"
        rows.append(f"<tr>{row}</tr>")
    head = "".join(f"<th>{c}</th>" for c in cols)
    return (f'<div class="card" style="margin-top:14px;overflow-x:auto"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="note">Per forward pass; throughput in samples per '
            f"second at p50. Noisy: runs spread more than {max_cv:.0%} (cv = std / mean) around their mean, "
            "so treat those figures with care.</p></div>")


def _latency_section(prof: dict, max_cv: float) -> str:
    lat = _latency(prof)
    out = ["<h2>Latency distribution</h2>"]
    if not lat:
        return out[0] + f'<div class="card">{na_para(f"latency {NM}")}</div>'
    out.append(legend_html((f"{k} (vertical line)", col) for k, col in _MARKS))
    out.append(f'<div class="hists lat">{"".join(_latency_panel(s, max_cv) for s in lat)}</div>')
    out.append(_latency_table(lat, max_cv))
    return "".join(out)


# -- sweep -------------------------------------------------------------------------------------


def _sweep_section(prof: dict) -> str:
    lat = [s for s in _latency(prof) if is_num(s.get("batch_size")) and s["batch_size"] > 0]
    sizes = [float(s["batch_size"]) for s in lat]
    head = "<h2>Batch-size sweep</h2>"
    if not sizes:
        return head + f'<div class="card">{na_para(f"batch-size sweep {NM}")}</div>'
    xlog = max(sizes) / min(sizes) >= 8
    best = prof.get("best_batch_size")
    vline = (float(best), f"best batch {fmt_value(best)}") if is_num(best) and best > 0 else None
    common = dict(xlabel="batch size" + (" (log scale)" if xlog else ""), xlog=xlog, xticks=sorted(set(sizes)),
                  vline=vline, w=560, h=250)
    thr = [s.get("throughput") if is_num(s.get("throughput")) else None for s in lat]
    p50s = [s.get("p50") if is_num(s.get("p50")) else None for s in lat]
    f, unit = _time_unit(p50s)
    svg_t = svg_line([{"name": "throughput", "xs": sizes, "ys": thr, "colour": "#4c78a8", "markers": True}],
                     ylabel="samples / s", label="throughput against batch size", **common)
    svg_l = svg_line([{"name": "p50 latency", "xs": sizes,
                       "ys": [None if v is None else v * f for v in p50s], "colour": "#e45756", "markers": True}],
                     ylabel=f"p50 ({unit})", label="p50 latency against batch size", **common)
    missing = [fmt_value(s["batch_size"]) for s, v in zip(lat, thr) if v is None]
    cap = f"{len(sizes)} batch size(s)."
    if missing and len(missing) < len(lat):
        cap += f" Not measured at batch {', '.join(missing)} (a gap in the line)."
    if vline:
        cap += " Dashed: the best batch size, where throughput stops improving (within 5%)."
    else:
        cap += f" Best batch size {NM}."
    return (head + '<div class="grid2">'
            + figure_card("Throughput (samples/s) against batch size", svg_t or na_para(f"throughput {NM}"), esc(cap))
            + figure_card("p50 latency per forward pass against batch size", svg_l or na_para(f"latency {NM}"),
                          esc("Time of one forward pass of the whole batch."))
            + "</div>")


# -- breakdown ---------------------------------------------------------------------------------


def _breakdown(items: Any, title: str, what: str) -> str:
    rows_all = [as_dict(x) for x in as_list(items)]
    if not rows_all:
        return figure_card(title, na_para(f"{what} {NM}"))
    rows_all.sort(key=lambda o: -(o.get("share") if is_num(o.get("share")) else -1.0))
    shown = rows_all[:TOP_K]
    rows, colours, texts = [], [], []
    for o in shown:
        share = o.get("share") * 100 if is_num(o.get("share")) else None
        bound = o.get("bound") if o.get("bound") in _BOUND_COLOURS else None
        bits = [f"{share:.1f}%" if share is not None else NM]
        if is_num(o.get("flops_per_s")):
            bits.append(_si(o["flops_per_s"], "FLOP/s"))
        if o.get("provider"):
            bits.append(str(o["provider"]))
        tip = (f"{o.get('name')}: {_secs(o.get('time')) or NM} per run, {fmt_value(o.get('calls'))} calls, "
               f"{_si(o.get('flops'), 'FLOP') or 'FLOPs ' + NM}, "
               f"{o.get('bound') or 'bound ' + NM}")
        rows.append((str(o.get("name")), tip, [share]))
        colours.append(_BOUND_COLOURS[bound])
        texts.append(" · ".join(bits))
    svg = svg_bars(rows, names=["share"], colours=["#4c78a8"], row_colours=colours, texts=texts, w=600,
                   fixed=_from_zero([r[2][0] for r in rows]), xlabel="share of the forward time (%)", label=title)
    legend = legend_html([("compute-bound", _BOUND_COLOURS["compute"]), ("memory-bound", _BOUND_COLOURS["memory"]),
                          ("too little to say", _BOUND_COLOURS[None])])
    more = f" {len(rows_all) - len(shown)} more {what} not shown." if len(rows_all) > len(shown) else ""
    cap = ("Bound: the arithmetic intensity (FLOPs per byte) against the machine's measured ridge point. "
           "Beside each bar: share of time, achieved FLOP/s where FLOPs were counted, and the provider for "
           f"ONNX.{more}")
    return figure_card(title, (svg or na_para(f"{what} shares {NM}")) + _breakdown_table(shown), esc(cap), legend)


def _breakdown_table(items: list[dict]) -> str:
    rows = "".join(
        f"<tr><td><code>{esc(shorten(str(o.get('name')), 60))}</code></td>"
        f"<td class=num>{_show(_secs(o.get('time')))}</td><td class=num>{_show(_pct(o.get('share')))}</td>"
        f"<td class=num>{cell_html(o.get('calls'), NM)}</td>"
        f"<td class=num>{_show(_si(o.get('flops'), 'FLOP'))}</td>"
        f"<td class=num>{_show(_si(o.get('flops_per_s'), 'FLOP/s'))}</td>"
        f"<td>{cell_html(o.get('bound'), NM)}</td><td>{cell_html(o.get('provider'), '-')}</td></tr>" for o in items)
    return ("<details><summary>table</summary><table><thead><tr><th>name</th><th>time / run</th><th>share</th>"
            "<th>calls</th><th>FLOPs</th><th>FLOP/s</th><th>bound</th><th>provider</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>")


def _breakdown_section(prof: dict) -> str:
    mods = as_list(prof.get("modules"))
    kinds = {as_dict(m).get("kind") for m in mods}
    mod_title = "Per node (ONNX)" if kinds == {"node"} else "Per module"
    return ("<h2>Where the time goes</h2>" + '<div class="grid2">'
            + _breakdown(prof.get("ops"), "Per operator (top by share of time)", "operators")
            + _breakdown(mods, f"{mod_title} (top by share of time)", "modules")
            + "</div>")


# -- what-ifs ----------------------------------------------------------------------------------


def _verdict(w: dict) -> str:
    why = f'<div class="ev">{esc(w.get("reason"))}</div>' if w.get("reason") else ""
    if w.get("applicable") is False:
        return f'<span class="badge b-muted">not applicable</span>{why}'
    if w.get("recommended"):
        return f'<span class="badge b-ok">✓ recommended</span>{why}'
    if not is_num(w.get("speedup")):
        return f'<span class="badge b-muted">not measured</span>{why}'
    verdict = as_dict(w.get("timing")).get("verdict")
    if verdict and verdict != "faster":  # the harness's verdict: inconclusive, slower or a measurement error
        return f'<span class="badge b-muted">{esc(verdict)}</span>{why}'
    return f'<span class="badge b-muted">tried, did not help</span>{why}'


def _whatif_section(prof: dict, min_speedup: float) -> str:
    ws = [as_dict(x) for x in as_list(prof.get("whatifs"))]
    head = "<h2>What-ifs (each change run for real against the baseline)</h2>"
    if not ws:
        return head + f'<div class="card">{na_para(f"what-ifs {NM}")}</div>'
    rows = []
    for w in ws:
        p50 = _show(_secs(w.get("p50")))
        if w.get("per_sample") and is_num(w.get("p50")):
            p50 += ' <span class="na">per sample</span>'
        sp, rel = w.get("speedup"), w.get("rel_diff")
        tol = _show(sig3(w["tolerance"]) if is_num(w.get("tolerance")) else None)
        if w.get("within_tolerance") is False:
            tol += ' <span class="badge b-error">exceeded</span>'
        tm = as_dict(w.get("timing"))
        lo, hi = tm.get("ci_low"), tm.get("ci_high")
        ci = f"{sig3(lo)}–{sig3(hi)}× ({tm.get('rounds')} rounds)" if is_num(lo) and is_num(hi) else None
        rows.append(f"<tr><td><code>{esc(w.get('name'))}</code></td><td>{cell_html(w.get('detail'), '-')}</td>"
                    f"<td class=num>{_show(_secs(w.get('baseline_p50')))}</td><td class=num>{p50}</td>"
                    f"<td class=num>{_show(f'{sig3(sp)}×' if is_num(sp) else None)}</td>"
                    f"<td class=num>{_show(ci)}</td>"
                    f"<td class=num>{_show(f'{rel:.1e}' if is_num(rel) else None)}</td>"
                    f"<td class=num>{tol}</td><td>{_verdict(w)}</td></tr>")
    table = ('<div class="card" style="overflow-x:auto"><table><thead><tr><th>what-if</th><th>detail</th>'
             "<th>baseline p50</th><th>p50</th><th>speedup</th><th>95% interval</th><th>rel diff</th><th>tolerance</th>"
             "<th>verdict</th>"
             f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    bars, colours, texts = [], [], []
    for w in ws:
        name = str(w.get("name")) + (f" ({w.get('detail')})" if w.get("detail") else "")
        sp = w.get("speedup") if is_num(w.get("speedup")) and w.get("applicable") is not False else None
        # the bar's label is the what-if's name, whole; its detail is in the table above and the tooltip (a label
        # of name and detail was cut to fit the chart's margin)
        bars.append((str(w.get("name")), f"{name}: speedup {fmt_value(sp) if sp is not None else NM}", [sp]))
        colours.append("#2e7d32" if w.get("recommended") else
                       "#c62828" if w.get("within_tolerance") is False else "#9aa3af")
        texts.append(("not applicable" if w.get("applicable") is False else NM) if sp is None else
                     f"{sig3(sp)}×" + (" ✓" if w.get("recommended") else ""))
    svg = svg_bars(bars, names=["speedup"], colours=["#9aa3af"], row_colours=colours, texts=texts, w=1100,
                   fixed=_from_zero([b[2][0] for b in bars] + [min_speedup]),
                   vline=(min_speedup, f"threshold {sig3(min_speedup)}×"), xlabel="speedup (baseline ÷ this)",
                   label="what-if speedups")
    legend = legend_html([("recommended", "#2e7d32"), ("did not help", "#9aa3af"),
                          ("outputs out of tolerance", "#c62828")])
    cap = (f"Recommended when the speedup reaches {sig3(min_speedup)}× and the outputs stay within tolerance of the "
           "original (rel diff = max |a − b| / max |a|). Where the batch changes, times are per sample.")
    fig = figure_card("Speedup per what-if", svg or na_para(f"speedups {NM}"), esc(cap), legend)
    return head + table + f'<div style="margin-top:14px">{fig}</div>'


# -- notes -------------------------------------------------------------------------------------


def _notes_section(prof: dict) -> str:
    notes = [str(n) for n in as_list(prof.get("notes")) if n]
    notes_html = ('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>") if notes else \
        '<p class="na">no notes</p>'
    err = prof.get("error")
    err_html = f'<div class="alert"><b>Error:</b> {esc(err)}</div>' if err else '<p class="na">no error</p>'
    facts = {"device name": prof.get("device_name"),
             "total FLOPs per forward": _si(prof.get("total_flops"), "FLOP"),
             "achieved FLOP/s": _si(prof.get("achieved_flops_per_s"), "FLOP/s"),
             "peak FLOP/s (measured matmul)": _si(prof.get("peak_flops_per_s"), "FLOP/s"),
             "peak bandwidth (measured copy)": _si(prof.get("peak_bandwidth"), "B/s"),
             "profiler overhead": f"{sig3(prof['overhead'])}× a plain run" if is_num(prof.get("overhead")) else None,
             "run time": _secs(prof.get("seconds"))}
    return ('<h2>Machine, notes and errors</h2><div class="grid2">'
            + figure_card("Machine and measurement", kv_table(facts, na=NM))
            + figure_card("Notes", notes_html + err_html) + "</div>")


def render_profile_html(doc: dict, *, max_cv: float | None = None, min_speedup: float | None = None) -> str:
    """One self-contained HTML page (no network needed: no external scripts, fonts, images or CSS) for a
    `dldoctor profile` report. `max_cv` and `min_speedup`: the thresholds of the configuration that judged it
    (PRF002's noisy timings, PRF001's recommended speedup); the rule defaults when not given."""
    doc = as_dict(doc)
    prof = as_dict(doc.get("profile"))
    model = as_dict(doc.get("model"))
    max_cv, min_speedup = _thresholds(as_dict(prof.get("config")), max_cv, min_speedup)
    body = [_header(doc, prof)]
    if not prof:
        body.append(f'<div class="alert warn">This report has no profile: profile {NM}.</div>')
    body.append(findings_section(doc))
    body.append(_latency_section(prof, max_cv))
    body.append(_sweep_section(prof))
    body.append(_breakdown_section(prof))
    body.append(_whatif_section(prof, min_speedup))
    body.append(_notes_section(prof))
    title = f"dldoctor profile: {model.get('name') or model.get('path') or 'model'}"
    return page_html(doc, title, body, _CSS)
