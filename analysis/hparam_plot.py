"""The error-vs-hyper-parameters figure: one column per hyper-parameter, one block of rows per
facet (the trials above, each arm's good range below) and, on the lr panel, each arm's stability
frontier (a dashed vertical line at the lr where P(diverged) reaches its level, its bootstrap
interval shaded, labelled with the arm)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stability.analysis.figures import Frontier, HparamData
from stability.analysis.plot_style import (
    Facets,
    axis_id,
    clean,
    colour_of,
    esc,
    facet_list,
    layout,
    ranks,
    rgba,
)

SCATTER = 270  # px of a facet's trials panel
BAR = 22  # px per arm of its good-range panel
INNER = 12  # px between a facet's trials and its good ranges
SPACE = 62  # px between facets (tick labels, the next facet's titles)


def _frontier(fig: go.Figure, arm: str, f: Frontier, colour: str, row: int, y: tuple[float, float], rank: int) -> None:
    """The arm's frontier on the lr panel at (row, 1): interval, line, label."""
    lo, hi = y
    group = esc(arm)
    if f.lo is not None and f.hi is not None:
        fig.add_trace(go.Scatter(x=[f.lo, f.hi, f.hi, f.lo, f.lo], y=[lo, lo, hi, hi, lo], fill="toself", mode="lines",
                                 fillcolor=rgba(colour, 0.12), line={"width": 0}, showlegend=False, legendgroup=group,
                                 name=f"{esc(arm)} stability frontier interval", hoverinfo="skip"), row=row, col=1)
    ci = f" [{f.lo:.3g}, {f.hi:.3g}]" if f.lo is not None and f.hi is not None else ""
    fig.add_trace(go.Scatter(
        x=[f.lr, f.lr], y=[lo, hi], mode="lines", line={"color": colour, "dash": "dash", "width": 1.6},
        showlegend=False, legendgroup=group, legendrank=rank, name=f"{esc(arm)} stability frontier",
        hovertemplate=f"{esc(arm)}: P(diverged) reaches {f.level:.0%} at lr {f.lr:.3g}{ci}<extra></extra>",
    ), row=row, col=1)
    fig.add_annotation(x=math.log10(f.lr), y=hi, xref=axis_id(fig, row, 1, "x"), yref=axis_id(fig, row, 1, "y"),
                       text=esc(arm), textangle=-90, xanchor="right", yanchor="top", showarrow=False,
                       font={"size": 10, "color": colour}, yshift=-4)


def _range(panel) -> list[float] | None:
    """One x range for a column's panels (axis units: log10 on a log axis), spanning its trials
    and good ranges with a margin; fixed ranges rather than matched axes, which the browser
    lays out again and again when many panels match."""
    values = [v for pts in panel.points for v in np.asarray(pts.x, float)]
    values += [v for r in panel.ranges.values() for v in r]
    x = np.asarray(values, float)
    x = x[np.isfinite(x) & (x > 0)] if panel.log else x[np.isfinite(x)]
    if not len(x):
        return None
    lo, hi = (np.log10(x.min()), np.log10(x.max())) if panel.log else (x.min(), x.max())
    pad = 0.04 * (hi - lo) if hi > lo else 0.5 if panel.log else max(abs(lo) * 0.1, 0.5)
    return [float(lo - pad), float(hi + pad)]


def plot_hparams(data: HparamData, colours: dict[str, str] | None = None, facets: Facets | None = None) -> go.Figure:
    """Error against each hyper-parameter, one column each: circles for trials, crosses for
    diverged ones; below them each arm's good range as a shaded bar with its median; one block
    of these rows per facet; the stability frontier on the lr panel."""
    arms = list(dict.fromkeys(pts.arm for p in data.panels for pts in p.points))
    fs = facet_list(facets, arms)
    where = {a: (i, j) for i, (_, held) in enumerate(fs) for j, a in enumerate(held)}
    n = max(1, len(data.panels))
    heights = [h for _, held in fs for h in (SCATTER, BAR * len(held) + 14)]
    gaps = [INNER if r % 2 == 0 else SPACE for r in range(len(heights) - 1)] + [0]
    total = sum(heights) + sum(gaps)
    fig = make_subplots(rows=2 * len(fs), cols=n, horizontal_spacing=0.04, vertical_spacing=0)
    top = total
    for r, (h, gap) in enumerate(zip(heights, gaps), start=1):  # rows of their own heights and gaps
        fig.update_yaxes(domain=[(top - h) / total, top / total], row=r)
        if r % 2:  # a facet's trials: its titles above
            for col, p in enumerate(data.panels, start=1):
                x0, x1 = fig.get_subplot(r, col).xaxis.domain
                fig.add_annotation(text=esc(" \u00b7 ".join(x for x in (fs[r // 2][0], p.title) if x)), x=(x0 + x1) / 2,
                                   y=top / total, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
                                   showarrow=False, font={"size": 14})
        top -= h + gap
    order, shown = ranks(fs), set()
    ys = np.concatenate([pts.y for p in data.panels for pts in p.points]) if arms else np.zeros(1)
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    for col, panel in enumerate(data.panels, start=1):
        for i, pts in enumerate(panel.points):
            c = colour_of(colours, pts.arm, i)
            f, slot = where[pts.arm]
            for flag, symbol in ((False, "circle"), (True, "x")):
                mask = pts.diverged == flag
                if not mask.any():
                    continue
                fig.add_trace(go.Scatter(
                    x=clean(pts.x[mask]), y=clean(pts.y[mask]), mode="markers", name=esc(pts.arm),
                    legendgroup=esc(pts.arm), legendrank=order[pts.arm], showlegend=pts.arm not in shown,
                    marker={"color": c, "symbol": symbol, "size": 8 if flag else 7, "line": {"width": 0.5, "color": "white"}},
                    text=[esc(t) for t in np.asarray(pts.text, dtype=object)[mask]], hovertemplate="%{text}<extra></extra>",
                ), row=2 * f + 1, col=col)
                shown.add(pts.arm)
            lo, mid, hi = panel.ranges.get(pts.arm, (math.nan, math.nan, math.nan))
            if all(math.isfinite(v) for v in (lo, mid, hi)):
                fig.add_trace(go.Scatter(
                    x=[lo, hi, hi, lo, lo], y=[slot - 0.3, slot - 0.3, slot + 0.3, slot + 0.3, slot - 0.3], fill="toself",
                    mode="lines", fillcolor=rgba(c, 0.35), line={"width": 0}, showlegend=False, legendgroup=esc(pts.arm),
                    name=f"{esc(pts.arm)} good range",
                    hovertemplate=f"{esc(pts.arm)}: good {esc(panel.param)} {lo:.3g} .. {hi:.3g}<extra></extra>",
                ), row=2 * f + 2, col=col)
                fig.add_trace(go.Scatter(x=[mid], y=[slot], mode="markers", showlegend=False, legendgroup=esc(pts.arm),
                                         marker={"color": c, "symbol": "line-ns-open", "size": 12, "line": {"width": 2}},
                                         hovertemplate=f"median {mid:.3g}<extra></extra>"), row=2 * f + 2, col=col)
            if panel.param == "lr" and pts.arm in data.frontier:
                _frontier(fig, pts.arm, data.frontier[pts.arm], c, 2 * f + 1, (float(ys.min()), float(ys.max())),
                          order[pts.arm])
    for col, panel in enumerate(data.panels, start=1):
        for f, (_, held) in enumerate(fs):
            kind = {"type": "log" if panel.log else "linear", "exponentformat": "power", "range": _range(panel)}
            fig.update_xaxes(showticklabels=False, row=2 * f + 1, col=col, **kind)
            fig.update_xaxes(row=2 * f + 2, col=col, **kind)
            fig.update_yaxes(matches=axis_id(fig, 1, 1, "y"), showticklabels=col == 1, row=2 * f + 1, col=col)
            fig.update_yaxes(tickvals=list(range(len(held))), ticktext=[esc(a) for a in held] if col == 1 else None,
                             showticklabels=col == 1, range=[len(held) - 0.4, -0.6], showgrid=False, zeroline=False,
                             row=2 * f + 2, col=col)
        fig.update_xaxes(title_text=esc(panel.param), row=2 * len(fs), col=col)
    for f in range(len(fs)):
        fig.update_yaxes(title_text="top-1 error (%)", row=2 * f + 1, col=1)
    legend = [a for _, held in fs for a in held]
    level = next(iter(data.frontier.values())).level if data.frontier else None
    subtitle = "x: diverged trial; bars: good ranges (median marked)" + (
        f"; dashed: stability frontier, the lr where P(diverged) reaches {level:.0%} (interval shaded)" if level else "")
    return layout(fig, data.title, cols=n, legend=legend, subtitle=subtitle, plot_px=total, facets=[t for t, _ in fs],
                  facet_sizes=[len(held) for _, held in fs], titled=True)
