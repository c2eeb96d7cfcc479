"""Plotly renderings of the figure data of `analysis.figures` (no computation here).

Text that comes from results (arm names, trial ids) is HTML-escaped before it reaches plotly,
which would otherwise interpret tags such as <a href> in labels.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from analysis.figures import HparamData, LinesData, OptimizerData

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
OPTIMIZER_PALETTE = qualitative.Dark2
HEIGHT = 420


def colour_map(arms: Sequence[str]) -> dict[str, str]:
    """One colour per arm, stable across figures."""
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def _esc(text: object) -> str:
    """Plotly-safe text: HTML escaped, line breaks as <br> (plotly reads label text as its own
    HTML subset and has no escaping option)."""
    return html.escape(str(text), quote=False).replace("\n", "<br>")


def _rgba(colour: str, alpha: float) -> str:
    """A palette colour (#rrggbb) made translucent."""
    r, g, b = hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"


def _colour(colours: dict[str, str] | None, arm: str, i: int) -> str:
    return (colours or {}).get(arm, PALETTE[i % len(PALETTE)])


def _clean(a) -> list:
    """Plotly-safe values: non-finite numbers become gaps (None) in plain lists, the same JSON whatever
    plotly's encoding of numpy arrays."""
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in np.asarray(a).tolist()]


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, legend_below: bool = True, top: int = 50) -> go.Figure:
    fig.update_layout(
        title={"text": _esc(title), "font": {"size": 15}}, template="plotly_white", height=height,
        margin={"l": 60, "r": 20, "t": top, "b": 40}, hovermode="closest",
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0} if legend_below else {},
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif", "size": 12},
    )
    return fig


def plot_lines(data: LinesData, colours: dict[str, str] | None = None) -> go.Figure:
    """Lines with optional bootstrap bands (EDFs, expected best of k, learning curves, epochs);
    lines with different `panel` values go to side-by-side panels sharing the y axis."""
    panels = list(dict.fromkeys(line.panel for line in data.lines)) or [""]
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[_esc(p) for p in panels] if len(panels) > 1 else None)
    shown = set()
    for i, line in enumerate(data.lines):
        c = _colour(colours, line.arm, i)
        col = panels.index(line.panel) + 1
        shape = "hv" if line.step else "linear"
        if line.band_x is not None and line.lo is not None:
            bx = _clean(line.band_x)
            common = {"mode": "lines", "line": {"width": 0, "shape": shape}, "hoverinfo": "skip", "showlegend": False,
                      "legendgroup": _esc(line.name)}
            fig.add_trace(go.Scatter(x=bx, y=_clean(line.lo), **common), row=1, col=col)
            fig.add_trace(go.Scatter(x=bx, y=_clean(line.hi), fill="tonexty", fillcolor=_rgba(c, 0.13), **common),
                          row=1, col=col)
        fig.add_trace(go.Scatter(
            x=_clean(line.x), y=_clean(line.y), name=_esc(line.name), legendgroup=_esc(line.name),
            showlegend=line.name not in shown, mode="lines" if line.step or len(line.x) > 30 else "lines+markers",
            line={"color": c, "dash": line.dash, "width": 2, "shape": shape},
            text=[_esc(t) for t in line.text] if line.text else None,
        ), row=1, col=col)
        shown.add(line.name)
    fig.update_xaxes(title_text=_esc(data.x_title), type="log" if data.x_log else "linear")
    fig.update_yaxes(title_text=_esc(data.y_title), row=1, col=1)
    if data.x_log and data.lines and all(np.all(np.asarray(l.x) >= 1) for l in data.lines):
        xs = sorted({float(v) for line in data.lines for v in np.asarray(line.x)})
        if len(xs) <= 6:  # a few budgets (epochs): label each
            fig.update_xaxes(tickvals=xs, ticktext=[f"{v:g}" for v in xs])
        else:  # k = 1..n: powers of two
            fig.update_xaxes(dtick=math.log10(2), tickformat="d")
    return _layout(fig, data.title)


def plot_edf(data: LinesData, colours: dict[str, str] | None = None) -> go.Figure:
    fig = plot_lines(data, colours)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    return fig


def plot_learning_curves(error: LinesData, loss: LinesData, colours: dict[str, str] | None = None) -> go.Figure:
    """Best and worst trials' curves: top-1 error above, train loss below, one legend."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for row, data in ((1, error), (2, loss)):
        for i, line in enumerate(data.lines):
            fig.add_trace(go.Scatter(
                x=_clean(line.x), y=_clean(line.y), name=_esc(line.name), legendgroup=_esc(line.name), showlegend=row == 1,
                mode="lines+markers" if len(line.x) <= 30 else "lines", marker={"size": 4},
                line={"color": _colour(colours, line.arm, i), "dash": line.dash, "width": 2},
                text=[_esc(t) for t in line.text] if line.text else None,
            ), row=row, col=1)
        fig.update_yaxes(title_text=_esc(data.y_title), row=row, col=1)
    fig.update_xaxes(title_text=_esc(loss.x_title), row=2, col=1)
    return _layout(fig, error.title, height=560)


def plot_hparams(data: HparamData, colours: dict[str, str] | None = None) -> go.Figure:
    """Error against each hyper-parameter, one column each: circles for trials, crosses for
    diverged ones; below, each arm's good range as a shaded bar with its median."""
    n = max(1, len(data.panels))
    arms = list(dict.fromkeys(pts.arm for p in data.panels for pts in p.points))
    fig = make_subplots(rows=2, cols=n, shared_yaxes=True, shared_xaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.04, row_heights=[0.8, 0.2], subplot_titles=[_esc(p.title) for p in data.panels])
    seen = set()
    for col, panel in enumerate(data.panels, start=1):
        for i, pts in enumerate(panel.points):
            c = _colour(colours, pts.arm, i)
            for flag, symbol in ((False, "circle"), (True, "x")):
                mask = pts.diverged == flag
                if not mask.any():
                    continue
                name = _esc(pts.arm) + (" (diverged)" if flag else "")
                fig.add_trace(go.Scatter(
                    x=_clean(pts.x[mask]), y=_clean(pts.y[mask]), mode="markers", name=name, legendgroup=_esc(pts.arm),
                    showlegend=name not in seen, marker={"color": c, "symbol": symbol, "size": 8 if flag else 7,
                                                         "line": {"width": 0.5, "color": "white"}},
                    text=[_esc(t) for t in np.asarray(pts.text, dtype=object)[mask]], hovertemplate="%{text}<extra></extra>",
                ), row=1, col=col)
                seen.add(name)
            lo, mid, hi = panel.ranges.get(pts.arm, (math.nan, math.nan, math.nan))
            if all(math.isfinite(v) for v in (lo, mid, hi)):
                y = arms.index(pts.arm)
                fig.add_trace(go.Scatter(
                    x=[lo, hi, hi, lo, lo], y=[y - 0.3, y - 0.3, y + 0.3, y + 0.3, y - 0.3], fill="toself", mode="lines",
                    fillcolor=_rgba(c, 0.35), line={"width": 0}, showlegend=False, legendgroup=_esc(pts.arm),
                    hovertemplate=f"{_esc(pts.arm)}: good {_esc(panel.param)} {lo:.3g} .. {hi:.3g}<extra></extra>",
                ), row=2, col=col)
                fig.add_trace(go.Scatter(x=[mid], y=[y], mode="markers", showlegend=False, legendgroup=_esc(pts.arm),
                                         marker={"color": c, "symbol": "line-ns-open", "size": 12, "line": {"width": 2}},
                                         hovertemplate=f"median {mid:.3g}<extra></extra>"), row=2, col=col)
        fig.update_xaxes(type="log" if panel.log else "linear", exponentformat="power", row=1, col=col)
        fig.update_xaxes(type="log" if panel.log else "linear", exponentformat="power", title_text=_esc(panel.param),
                         row=2, col=col)
    fig.update_yaxes(title_text="top-1 error (%)", row=1, col=1)
    fig.update_yaxes(tickvals=list(range(len(arms))), ticktext=[_esc(a) for a in arms], range=[-0.6, len(arms) - 0.4],
                     showgrid=False, row=2)
    fig.update_yaxes(title_text="good range", row=2, col=1)
    return _layout(fig, data.title, height=500 + 18 * len(arms), top=70)


def plot_optimizers(data: OptimizerData, colours: dict[str, str] | None = None) -> go.Figure:
    """Box plots of the error per arm, one colour per optimizer, the best run marked."""
    fig = go.Figure()
    optimizers = sorted({b.optimizer for b in data.boxes})
    opt_colours = {o: OPTIMIZER_PALETTE[i % len(OPTIMIZER_PALETTE)] for i, o in enumerate(optimizers)}
    for opt in optimizers:
        boxes = [b for b in data.boxes if b.optimizer == opt]
        xs = [_esc(b.arm) for b in boxes for _ in b.errors]
        ys = [float(e) for b in boxes for e in b.errors]
        fig.add_trace(go.Box(x=xs, y=ys, name=_esc(opt), marker_color=opt_colours[opt], boxpoints="all",
                             jitter=0.4, pointpos=0, offsetgroup=_esc(opt), legendgroup=_esc(opt)))
        fig.add_trace(go.Scatter(x=[_esc(b.arm) for b in boxes], y=[b.best for b in boxes], mode="markers",
                                 name=f"{_esc(opt)} best", offsetgroup=_esc(opt), legendgroup=_esc(opt),
                                 marker={"symbol": "diamond", "size": 11, "color": opt_colours[opt],
                                         "line": {"width": 1, "color": "black"}}))
    for arm, gap in data.gaps.items():
        fig.add_annotation(x=_esc(arm), y=1.0, yref="paper", yanchor="bottom", showarrow=False, text=f"{gap:+.2f}")
    fig.update_layout(boxmode="group", scattermode="group")
    fig.update_yaxes(title_text="top-1 error (%)")
    title = data.title
    if data.gaps:
        title += f" (above: best {optimizers[-1]} - best {optimizers[0]})"
    return _layout(fig, title)


def figure_to_svg_name(name: str) -> str:
    """A file-name-safe form of a figure name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_layer_similarity(data: LinesData, colours: dict[str, str] | None = None) -> go.Figure:
    """Median patch similarity per block with its interquartile band; integer block ticks."""
    fig = plot_lines(data, colours)
    fig.update_xaxes(dtick=1 if max((len(line.x) for line in data.lines), default=0) <= 16 else None, tick0=1)
    return fig
