"""A probe report as one self-contained HTML page: inline CSS and inline SVG plots, nothing fetched.

`render_probe_html(report.to_dict())` takes the JSON form of a report that carries a training
probe (`doc["probe"]` is `ProbeResult.to_dict()`, see dldoctor/report/probe_types.py) and draws it:
findings first, then the loss curve, gradient norms, update-to-weight ratios, dead/zero/saturated
units, attribution maps, the independence check and input/output facts, and activation and
gradient histograms. Every figure is SVG drawn with the kit (dldoctor/render/html/kit.py); every
string from the doc is escaped. A figure that was not measured says "not recorded" rather than
drawing a 0.
"""
from __future__ import annotations

import math
from typing import Any

from dldoctor.render.html.kit import (FIRST_COLOUR, LAST_COLOUR, NA, PALETTE, as_dict, as_list, cell_html, esc,
                                      figure_card, findings_section, fmt_value, hist_ok, is_num, kv_table,
                                      legend_html, na_para, page_html, palette_colours, shorten, sig3, subline,
                                      svg_bars, svg_heatmap, svg_hist, svg_line)

__all__ = ["render_probe_html"]

MAX_HIST_LAYERS = 24  # activation histogram panels
MAX_HIST_PARAMS = 24  # gradient histogram panels
MAX_BARS = 64  # rows of a bar chart
MAX_SERIES = 24  # lines of a multi-line plot
MAX_GAPS = 300  # shaded gaps in the loss plot
UPDATE_BAND = (1e-5, 1e-1)  # the usual range of ||Δw|| / ||w|| per step


# -- sections ----------------------------------------------------------------------------------


def _last(values: Any) -> Any:
    v = as_list(values)
    return v[-1] if v else None


def _forward_params(probe: dict) -> list[dict]:
    """Parameters in forward order: by the forward position of their module, else where they were listed."""
    order = {as_dict(lay).get("path"): as_dict(lay).get("order") for lay in as_list(probe.get("layers"))}
    keyed, last = [], -1.0
    for i, p in enumerate(as_list(probe.get("params"))):
        p = as_dict(p)
        o = order.get(p.get("module"))
        if is_num(o):
            last = float(o)
        keyed.append((last, i, p))
    return [p for _, _, p in sorted(keyed, key=lambda t: (t[0], t[1]))]


def _layers(probe: dict) -> list[dict]:
    lays = [as_dict(x) for x in as_list(probe.get("layers"))]
    return [x for _, x in sorted(enumerate(lays), key=lambda t: (t[1].get("order") if is_num(t[1].get("order"))
                                                                  else math.inf, t[0]))]


def _xs(probe: dict, n: int) -> list[float]:
    steps = as_list(probe.get("steps"))
    if len(steps) >= n and all(is_num(s) for s in steps[:n]):
        return [float(s) for s in steps[:n]]
    return [float(i) for i in range(n)]


def _last_step(probe: dict) -> str:
    steps = as_list(probe.get("steps"))
    return f"step {fmt_value(steps[-1])}" if steps else "the last recorded step"


def _more(shown: int, total: int, what: str) -> str:
    return f" {total - shown} more {what} not shown." if total > shown else ""


def _header(doc: dict, probe: dict) -> str:
    model = as_dict(doc.get("model"))
    name = model.get("name") or model.get("path") or "model"
    cfg = as_dict(probe.get("config"))
    known = ("steps", "optimizer", "lr", "loss", "batch_size", "seed", "device", "data", "every")
    items = [(k, cfg.get(k)) for k in known] + [(k, v) for k, v in cfg.items() if k not in known]
    cfg_html = "".join(f"<div><span>{esc(k.replace('_', ' '))}</span> {cell_html(v)}</div>" for k, v in items)
    sub = subline(model, doc.get("device") and f"device {doc.get('device')}")
    init, final, exp = probe.get("initial_loss"), probe.get("final_loss"), probe.get("expected_initial_loss")
    if init is None and as_list(probe.get("loss")):
        init = as_list(probe.get("loss"))[0]
    ratio = f"initial ÷ expected = {sig3(init / exp)}" if is_num(init) and is_num(exp) and exp != 0 else ""
    kpis = [("initial loss", init), ("final loss", final), ("expected initial loss", exp)]
    if is_num(probe.get("num_classes")):
        kpis.append(("classes", probe.get("num_classes")))
    if is_num(probe.get("seconds")):
        kpis.append(("run time (s)", probe.get("seconds")))
    kpi_html = "".join(f'<div class="kpi"><span>{esc(k)}</span><b>{cell_html(v)}</b></div>' for k, v in kpis)
    out = [f"<header><h1>dldoctor probe: {esc(name)}</h1>",
           f'<p class="sub">{sub}</p>' if sub else "",
           f'<div class="cfg">{cfg_html}</div>' if cfg else f'<p class="na">probe config {NA}</p>',
           f'<div class="kpis">{kpi_html}</div>',
           f'<p class="note">{esc(ratio)} (the expected value is the loss of a model at chance, e.g. ln C for C '
           f"classes)</p>" if ratio else "", "</header>"]
    if probe.get("error"):
        at = f" (step {fmt_value(probe.get('error_step'))})" if probe.get("error_step") is not None else ""
        out.append(f'<div class="alert"><b>The run stopped{esc(at)}:</b> {esc(probe.get("error"))}</div>')
    nf = as_dict(probe.get("first_nonfinite"))
    if nf:
        out.append(f'<div class="alert warn"><b>First NaN/Inf:</b> {esc(nf.get("kind") or "value")} at step '
                   f'{cell_html(nf.get("step"))} in <code>{cell_html(nf.get("where"))}</code></div>')
    return "".join(out)


def _loss_figure(probe: dict) -> str:
    loss = as_list(probe.get("loss"))
    exp = probe.get("expected_initial_loss")
    if not loss:
        return figure_card("Loss", na_para("loss not recorded"))
    ys = [v if is_num(v) else None for v in loss]
    xs = [float(i) for i in range(len(ys))]
    gaps: list[tuple[float, float]] = []
    start = None
    for i, v in enumerate(ys + [0.0]):
        if v is None and start is None:
            start = i
        elif v is not None and start is not None:
            gaps.append((float(start), float(i - 1)))
            start = None
    n_bad = sum(1 for v in ys if v is None)
    hline = (exp, f"expected at chance {sig3(exp)}") if is_num(exp) else None
    svg = svg_line([{"name": "loss", "xs": xs, "ys": ys, "colour": "#1f77b4"}], xlabel="step", ylabel="loss",
                   hline=hline, gaps=gaps[:MAX_GAPS], label="loss curve")
    if svg is None:
        return figure_card("Loss", na_para(f"loss not recorded: none of the {len(ys)} steps gave a finite loss"))
    cap = f"{len(ys)} steps."
    if n_bad:
        cap += f" Red bands: {n_bad} step(s) without a finite loss (gaps in the line)."
    if hline:
        cap += " Dashed: the loss expected at chance."
    return figure_card("Loss", svg, esc(cap))


def _weight_params(params: list[dict]) -> list[dict]:
    ws = [p for p in params if str(p.get("name", "")).endswith("weight") or len(as_list(p.get("shape"))) >= 2]
    return ws or params


def _param_tip(p: dict, what: str, v: Any) -> str:
    shape = "×".join(str(s) for s in as_list(p.get("shape"))) or "scalar"
    return f"{p.get('name')} ({p.get('module_type') or '?'}, {shape}): {what} {fmt_value(v)}"


def _grad_figures(probe: dict) -> tuple[str, str]:
    params = _forward_params(probe)
    if not params:
        return (figure_card("Gradient norm per weight", na_para("parameters not recorded")),
                figure_card("Gradient norm over steps", na_para("parameters not recorded")))
    ws = _weight_params(params)
    shown = ws[:MAX_BARS]
    rows = [(str(p.get("name")), _param_tip(p, "grad norm", _last(p.get("grad_norm"))), [_last(p.get("grad_norm"))])
            for p in shown]
    bars = svg_bars(rows, names=["grad norm"], colours=["#4c78a8"], log=True, xlabel="‖grad‖ (log scale)",
                    label="gradient norm per parameter")
    cap = (f"At {esc(_last_step(probe))}, weights in forward order. '{NA}': no gradient reached it that step; "
           f"'0': an all-zero gradient.{esc(_more(len(shown), len(ws), 'weights'))}")
    fig1 = figure_card("Gradient norm per weight (last recorded step)",
                       bars or na_para("gradient norms not recorded"), cap)
    fig2 = _over_steps(probe, ws, "grad_norm", "Gradient norm over steps", "‖grad‖ (log)", band=None)
    return fig1, fig2


def _over_steps(probe: dict, params: list[dict], key: str, title: str, ylabel: str,
                band: tuple[float, float] | None) -> str:
    have = [p for p in params if any(is_num(v) for v in as_list(p.get(key)))]
    if not have:
        return figure_card(title, na_para(f"{title.lower()}: {NA}"))
    if len(have) > MAX_SERIES:
        idx = sorted({round(i * (len(have) - 1) / (MAX_SERIES - 1)) for i in range(MAX_SERIES)})
        pick = [have[i] for i in idx]
    else:
        pick = have
    cols = palette_colours(len(pick))
    series = [{"name": str(p.get("name")), "xs": _xs(probe, len(as_list(p.get(key)))), "ys": as_list(p.get(key)),
               "colour": c} for p, c in zip(pick, cols)]
    svg = svg_line(series, xlabel="step", ylabel=ylabel, log=True, band=band, label=title)
    if len(pick) <= len(PALETTE):
        legend = legend_html((shorten(s["name"], 40), s["colour"]) for s in series)
    else:
        legend = (f'<div class="legend"><span>{esc(shorten(series[0]["name"], 30))}<i class="ramp"></i>'
                  f'{esc(shorten(series[-1]["name"], 30))} (forward order)</span></div>')
    cap = ""
    if any(is_num(v) and v <= 0 for p in pick for v in as_list(p.get(key))):
        cap = "Triangles on the bottom edge: a value of exactly 0 that step (no log position). "
    if len(pick) < len(have):
        cap += f"{len(pick)} of {len(have)} parameters, evenly spaced in forward order; hover a line for its name."
    if band:
        cap += f" Green band: {sig3(band[0])} to {sig3(band[1])}, the usual range per step."
    return figure_card(title, svg or na_para(NA), esc(cap.strip()), legend)


def _update_figures(probe: dict) -> tuple[str, str]:
    params = _forward_params(probe)
    if not params:
        return (figure_card("Update-to-weight ratio", na_para("parameters not recorded")),
                figure_card("Update-to-weight ratio over steps", na_para("parameters not recorded")))
    shown = params[:MAX_BARS]
    rows = [(str(p.get("name")), _param_tip(p, "update ratio", _last(p.get("update_ratio"))),
             [_last(p.get("update_ratio"))]) for p in shown]
    bars = svg_bars(rows, names=["update ratio"], colours=["#72b7b2"], log=True, band=UPDATE_BAND,
                    xlabel="‖Δw‖ / ‖w‖ per step (log scale)", label="update to weight ratio per parameter")
    cap = (f"At {esc(_last_step(probe))}, parameters in forward order. Green band: {sig3(UPDATE_BAND[0])} to "
           f"{sig3(UPDATE_BAND[1])}; far below, the parameter barely learns; far above, the step is too large."
           f"{esc(_more(len(shown), len(params), 'parameters'))}")
    fig1 = figure_card("Update-to-weight ratio (last recorded step)",
                       bars or na_para("update ratios not recorded"), cap)
    fig2 = _over_steps(probe, params, "update_ratio", "Update-to-weight ratio over steps", "‖Δw‖/‖w‖ (log)",
                       band=UPDATE_BAND)
    return fig1, fig2


def _unit_figures(probe: dict) -> str:
    layers = _layers(probe)
    if not layers:
        return figure_card("Dead and zero units per layer", na_para("layers not recorded"))
    shown = layers[:MAX_BARS]

    def tip(lay: dict, *keys: str) -> str:
        vals = ", ".join(f"{k.replace('_frac', '')} {fmt_value(_last(lay.get(k)))}" for k in keys)
        units = f", {lay.get('units')} units" if lay.get("units") is not None else ""
        return f"{lay.get('path')} ({lay.get('type')}{units}): {vals}"

    # dead units are counted where an activation can kill them (ReLU and kin); a layer with none has nothing to show
    # here, rather than a "not recorded" bar on every convolution and norm (its zero share is in the layer table)
    counted = [lay for lay in layers if any(is_num(v) for v in as_list(lay.get("dead_frac")))]
    shown = counted[:MAX_BARS]
    rows = [(f"{lay.get('path')}", tip(lay, "dead_frac", "zero_frac"),
             [_last(lay.get("dead_frac")), _last(lay.get("zero_frac"))]) for lay in shown]
    names, cols = ["dead units", "zero outputs"], ["#d62728", "#9aa3af"]
    bars = svg_bars(rows, names=names, colours=cols, fixed=(0.0, 1.0), xlabel="share (0–1)",
                    label="dead unit and zero fraction per layer")
    cap = (f"At {esc(_last_step(probe))}, layers in forward order. Dead: share of units (channels/features) that "
           f"are 0 for every sample; zero: share of output values exactly 0. Only the {len(counted)} of "
           f"{len(layers)} layers whose units can die (ReLU-like activations) are drawn."
           f"{esc(_more(len(shown), len(counted), 'layers'))}")
    out = figure_card("Dead units and zero outputs per layer", bars or na_para("dead/zero fractions not recorded"), cap,
                      legend_html(zip(names, cols)))
    sat = [lay for lay in layers if any(is_num(v) for v in as_list(lay.get("saturated_frac")))]
    if sat:
        srows = [(str(lay.get("path")), tip(lay, "saturated_frac"), [_last(lay.get("saturated_frac"))])
                 for lay in sat[:MAX_BARS]]
        sbars = svg_bars(srows, names=["saturated"], colours=["#f58518"], fixed=(0.0, 1.0), xlabel="share (0–1)",
                         label="saturation fraction")
        out += figure_card("Saturated inputs (sigmoid / tanh layers)", sbars or na_para(NA),
                           esc(f"At {_last_step(probe)}: share of inputs beyond the saturation threshold, where the "
                               "gradient vanishes."))
    return out


def _hist_panels(probe: dict) -> str:
    layers, params = _layers(probe), _forward_params(probe)
    legend = legend_html([("first recorded step", FIRST_COLOUR), ("last recorded step", LAST_COLOUR)])

    def panel(title: str, meta: str, first: Any, last: Any) -> str:
        svg = svg_hist(first, last, label=f"histogram of {title}")
        miss = [w for w, hd in (("first", first), ("last", last)) if hist_ok(hd) is None]
        note = ""
        if svg is None:
            body = na_para("histogram not recorded")
        else:
            body = svg
            if miss:
                note = f'<div class="note">{esc(" and ".join(miss))} step {NA}</div>'
        return (f'<div class="card"><h3 title="{esc(title)}">{esc(shorten(title, 44))}</h3>'
                f'<div class="meta">{esc(meta)}</div>{body}{note}</div>')

    out = ["<h2>Histograms</h2>", legend]
    out.append("<h3>Activations per layer (output values)</h3>")
    if layers:
        panels = [panel(str(lay.get("path")), str(lay.get("type") or ""), lay.get("hist_first"), lay.get("hist_last"))
                  for lay in layers[:MAX_HIST_LAYERS]]
        out.append(f'<div class="hists">{"".join(panels)}</div>')
        if len(layers) > MAX_HIST_LAYERS:
            out.append(f'<p class="note">{len(layers) - MAX_HIST_LAYERS} more layers left out '
                       f"(the first {MAX_HIST_LAYERS} in forward order are shown).</p>")
    else:
        out.append(na_para("layers not recorded"))
    out.append('<h3 style="margin-top:14px">Gradients per parameter</h3>')
    if params:
        panels = []
        for p in params[:MAX_HIST_PARAMS]:
            shape = "×".join(str(s) for s in as_list(p.get("shape"))) or "scalar"
            panels.append(panel(str(p.get("name")), f"{p.get('module_type') or ''} {shape}",
                                p.get("grad_hist_first"), p.get("grad_hist_last")))
        out.append(f'<div class="hists">{"".join(panels)}</div>')
        if len(params) > MAX_HIST_PARAMS:
            out.append(f'<p class="note">{len(params) - MAX_HIST_PARAMS} more parameters left out '
                       f"(the first {MAX_HIST_PARAMS} in forward order are shown).</p>")
    else:
        out.append(na_para("parameters not recorded"))
    return "".join(out)


def _attribution(probe: dict) -> str:
    at = probe.get("attribution")
    if not isinstance(at, dict):
        return '<div class="card"><h3>Attribution</h3><p class="na">attribution not recorded</p></div>'
    status = str(at.get("status") or "unknown")
    badge = "b-ok" if status == "complete" else "b-muted"
    facts = {k: at.get(k) for k in ("method", "target", "coverage", "border_share", "border_area", "reason",
                                      "convergence_delta", "input_shape") if k in at}
    if facts.get("reason") is None:  # no reason to give is not a missing measurement
        facts.pop("reason", None)
    if at.get("top_features"):
        facts["top_features"] = ", ".join(f"#{fmt_value(t[0])}: {fmt_value(t[1])}"
                                          for t in as_list(at.get("top_features"))
                                          if isinstance(t, (list, tuple)) and len(t) == 2)
    maps = []
    for key, title in (("heatmap", "Integrated gradients |attribution|"), ("gradcam", "Grad-CAM")):
        svg = svg_heatmap(at.get(key), label=title)
        if svg is None:
            why = f": {at.get('reason')}" if at.get("reason") and status != "complete" else ""
            svg = na_para(f"{key} {NA}{why}")
        maps.append(f'<div><h3>{esc(title)}</h3>{svg}</div>')
    return (f'<div class="card"><h3>Attribution <span class="badge {badge}">{esc(status)}</span></h3>'
            f'<div class="maps"><div style="flex:1 1 300px">{kv_table(facts)}'
            '<p class="note">coverage: the smallest share of input features carrying 90% of the attribution; '
            "border share: the share on the outer ring of the image.</p></div>"
            f'{"".join(maps)}</div></div>')


def _independence(probe: dict) -> str:
    ind = probe.get("independence")
    if not isinstance(ind, dict) or not ind:
        return figure_card("Sample independence", na_para("independence check not recorded"))
    if ind.get("checked") is True:
        verdict = ('<span class="badge b-error">outputs mix samples</span>' if ind.get("mixed") else
                   '<span class="badge b-ok">each output depends only on its own sample</span>')
    else:
        verdict = '<span class="badge b-muted">not checked</span>'
    return figure_card("Sample independence", f"<p>{verdict}</p>" + kv_table(ind, ("checked", "mixed", "max_change",
                                                                                  "method", "reason")))


def _io_tables(probe: dict) -> str:
    inp = kv_table(probe.get("inputs"), ("dtype", "float", "mean", "std", "min", "max", "nan", "synthetic",
                                         "integer_valued"))
    outp = kv_table(probe.get("output"), ("min", "max", "row_sum", "prob_like", "log_prob_like", "unit_interval",
                                          "target_min", "target_max", "target_signed", "head_activation"))
    return figure_card("Input batch", inp) + figure_card("Model output and targets", outp)


def _diagnostics(doc: dict) -> str:
    ds = [as_dict(x) for x in as_list(doc.get("diagnostics"))]
    if not ds:
        return ""
    rows = "".join(f"<tr><td>{esc(x.get('level'))}</td><td>{esc(x.get('message'))}</td>"
                   f"<td>{esc(x.get('where') or '-')}</td></tr>" for x in ds)
    return ('<h2>Diagnostics</h2><div class="card"><table><thead><tr><th>level</th><th>message</th><th>where</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></div>")


def render_probe_html(doc: dict) -> str:
    """One self-contained HTML page (no network needed: no external scripts, fonts, images or CSS) for a probe report."""
    doc = as_dict(doc)
    probe = as_dict(doc.get("probe"))
    model = as_dict(doc.get("model"))
    title = f"dldoctor probe: {model.get('name') or model.get('path') or 'model'}"
    body = [_header(doc, probe)]
    if not probe:
        body.append(f'<div class="alert warn">This report has no training probe: probe {NA}.</div>')
    body.append(findings_section(doc))
    grad_bars, grad_lines = _grad_figures(probe)
    upd_bars, upd_lines = _update_figures(probe)
    body.append("<h2>Training dynamics</h2>")
    body.append(f'<div class="grid2">{_loss_figure(probe)}{grad_lines}{grad_bars}{upd_bars}{upd_lines}'
                f"{_unit_figures(probe)}</div>")
    body.append("<h2>Attribution, independence, inputs and outputs</h2>")
    body.append(_attribution(probe))
    body.append(f'<div class="grid3" style="margin-top:14px">{_independence(probe)}{_io_tables(probe)}</div>')
    body.append(_hist_panels(probe))
    body.append(_diagnostics(doc))
    return page_html(doc, title, body)
