"""Plotly renderings of the figure data of `analysis.figures` (no computation here).

Every renderer takes the figure data, one colour per arm and optionally the facets (small
multiples, `analysis.facets`): (title, arms) pairs, one panel each, sharing their axes. A figure
has one legend, below the plots, with one entry per arm (clicking it hides the arm everywhere);
its height grows with the panels and the legend rows, so nothing scrolls or overlaps. The facet
titles drawn are in `figure.layout.meta["facets"]`.

Text that comes from results (arm names, trial ids) is HTML-escaped before it reaches plotly,
which would otherwise interpret tags such as <a href> in labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stability.analysis.figures import Line, LinesData, OptimizerData
from stability.analysis.hparam_plot import plot_hparams
from stability.analysis.verdict_matrix import MatrixData
from stability.analysis.plot_style import (
    GAP,
    OPTIMIZER_PALETTE,
    PANEL,
    Facets,
    axis_id,
    clean,
    colour_map,
    colour_of,
    esc,
    facet_list,
    layout,
    ranks,
    rgba,
    wrap,
)


def _legend_labels(lines: Sequence[Line]) -> dict[str, str]:
    """The legend text of each arm: its line's name when it has one line, else the arm."""
    per_arm: dict[str, list[str]] = {}
    for line in lines:
        if not line.group:
            per_arm.setdefault(line.arm, []).append(line.name)
    return {arm: names[0] if len(names) == 1 else arm for arm, names in per_arm.items()}


def _add_line(fig, line: Line, colour: str, row: int, col: int, label: str, rank: int, show: bool) -> None:
    """A line (with its band) in one panel; its legend entry is its arm's (or group's)."""
    group = esc(line.group or line.arm)
    visible = "legendonly" if line.hidden else True
    shape = "hv" if line.step else "linear"
    if line.band_x is not None and line.lo is not None:
        bx = clean(line.band_x)
        common = {"mode": "lines", "line": {"width": 0, "shape": shape}, "hoverinfo": "skip", "showlegend": False,
                  "legendgroup": group, "visible": visible}
        fig.add_trace(go.Scatter(x=bx, y=clean(line.lo), **common), row=row, col=col)
        fig.add_trace(go.Scatter(x=bx, y=clean(line.hi), fill="tonexty", fillcolor=rgba(colour, 0.13), **common),
                      row=row, col=col)
    text = [esc(t) for t in line.text] if line.text else None
    fig.add_trace(go.Scatter(
        x=clean(line.x), y=clean(line.y), name=esc(label), legendgroup=group, showlegend=show, legendrank=rank,
        mode="lines" if line.step or len(line.x) > 30 else "lines+markers", visible=visible, marker={"size": 5},
        line={"color": colour, "dash": line.dash, "width": 2, "shape": shape}, text=text,
        hovertemplate=f"{esc(line.name)}<br>%{{x:.4g}}, %{{y:.4g}}" + ("<br>%{text}" if text else "") + "<extra></extra>",
    ), row=row, col=col)


def _add_group_key(fig, line: Line) -> None:
    """One grey legend entry standing for every line of `line.group` (clicking it shows them)."""
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=esc(line.group), legendgroup=esc(line.group),
                             showlegend=True, legendrank=10**6, visible="legendonly" if line.hidden else True,
                             line={"color": "#555", "dash": line.dash, "width": 2}), row=1, col=1)


def plot_lines(data: LinesData, colours: dict[str, str] | None = None, facets: Facets | None = None) -> go.Figure:
    """Lines with optional bootstrap bands (EDFs, expected best of k, epochs, layers), one panel
    per facet (wrapped in rows) or, when lines carry a `panel`, one row per facet and one column
    per panel; every panel shares the axes."""
    panels = list(dict.fromkeys(line.panel for line in data.lines)) or [""]
    fs = facet_list(facets, [line.arm for line in data.lines])
    where = {a: i for i, (_, arms) in enumerate(fs) for a in arms}
    if len(panels) == 1:
        rows, cols = wrap(len(fs))
        cells = [(i // cols + 1, i % cols + 1) for i in range(len(fs))]
        titles = [t for t, _ in fs] + [""] * (rows * cols - len(fs)) if len(fs) > 1 else None
    else:
        rows, cols = len(fs), len(panels)
        titles = [" \u00b7 ".join(x for x in (t, p) if x) for t, _ in fs for p in panels]
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.06 if cols > 1 else 0.02,
                        vertical_spacing=min(0.3, GAP / (rows * PANEL + (rows - 1) * GAP)) if rows > 1 else 0.1,
                        subplot_titles=[esc(t) for t in titles] if titles else None)
    labels, order, shown, keys = _legend_labels(data.lines), ranks(fs), set(), set()
    for i, line in enumerate(data.lines):
        row, col = cells[where[line.arm]] if len(panels) == 1 else (where[line.arm] + 1, panels.index(line.panel) + 1)
        key = line.group or line.arm
        _add_line(fig, line, colour_of(colours, line.arm, i), row, col, labels.get(line.arm, line.name),
                  order.get(line.arm, 0), show=not line.group and key not in shown)
        if line.group and key not in keys:
            _add_group_key(fig, line)
            keys.add(key)
        shown.add(key)
    fig.update_xaxes(type="log" if data.x_log else "linear", matches="x", showticklabels=True)
    fig.update_yaxes(matches="y")
    used = {cells[i] for i in range(len(fs))} if len(panels) == 1 else {(r, c) for r in range(1, rows + 1)
                                                                      for c in range(1, cols + 1)}
    for r, c in used:
        if (r + 1, c) not in used:
            fig.update_xaxes(title_text=esc(data.x_title), row=r, col=c)
        if c == 1:
            fig.update_yaxes(title_text=esc(data.y_title), row=r, col=c)
        else:
            fig.update_yaxes(showticklabels=False, row=r, col=c)
    if data.x_log and data.lines and all(np.all(np.asarray(l.x) >= 1) for l in data.lines):
        xs = sorted({float(v) for line in data.lines for v in np.asarray(line.x)})
        if len(xs) <= 6:  # a few budgets (epochs): label each
            fig.update_xaxes(tickvals=xs, ticktext=[f"{v:g}" for v in xs])
        else:  # k = 1..n: powers of two
            fig.update_xaxes(dtick=math.log10(2), tickformat="d")
    legend = [labels[a] for _, arms in fs for a in arms if a in labels] + list(dict.fromkeys(
        line.group for line in data.lines if line.group))
    return layout(fig, data.title, rows=rows, cols=cols, legend=legend, subtitle=data.subtitle,
                  facets=[t for t, _ in fs], facet_sizes=[len(arms) for _, arms in fs], titled=bool(titles))


def plot_edf(data: LinesData, colours: dict[str, str] | None = None, facets: Facets | None = None) -> go.Figure:
    fig = plot_lines(data, colours, facets)
    fig.update_yaxes(range=[0, 1.02])
    return fig


def plot_learning_curves(error: LinesData, loss: LinesData, colours: dict[str, str] | None = None,
                         facets: Facets | None = None) -> go.Figure:
    """Best and worst trials' curves, one panel pair per facet: top-1 error above, train loss
    below; one legend entry per arm."""
    fs = facet_list(facets, [line.arm for line in error.lines])
    where = {a: i for i, (_, arms) in enumerate(fs) for a in arms}
    blocks, cols = wrap(len(fs))
    titles = []
    for b in range(blocks):
        for metric in (0, 1):
            titles += [fs[b * cols + c][0] if metric == 0 and b * cols + c < len(fs) else "" for c in range(cols)]
    fig = make_subplots(rows=2 * blocks, cols=cols, horizontal_spacing=0.06 if cols > 1 else 0.02,
                        vertical_spacing=0.04 if blocks == 1 else 40 / (blocks * 440 + (blocks - 1) * 40),
                        subplot_titles=[esc(t) for t in titles] if len(fs) > 1 else None)
    labels, order, shown = {line.arm: line.arm for line in error.lines}, ranks(fs), set()
    for metric, data in enumerate((error, loss)):
        for i, line in enumerate(data.lines):
            f = where.get(line.arm, 0)
            row, col = 2 * (f // cols) + metric + 1, f % cols + 1
            _add_line(fig, line, colour_of(colours, line.arm, i), row, col, labels[line.arm], order.get(line.arm, 0),
                      show=line.arm not in shown)
            shown.add(line.arm)
    fig.update_xaxes(matches="x", showticklabels=True)
    for f in range(len(fs)):
        for metric, data in enumerate((error, loss)):
            row, col = 2 * (f // cols) + metric + 1, f % cols + 1
            fig.update_yaxes(matches=axis_id(fig, 1 + metric, 1, "y"), row=row, col=col)
            if col == 1:
                fig.update_yaxes(title_text=esc(data.y_title), row=row, col=col)
            else:
                fig.update_yaxes(showticklabels=False, row=row, col=col)
            if metric == 1:
                fig.update_xaxes(title_text=esc(loss.x_title), row=row, col=col)
    return layout(fig, error.title, cols=cols, legend=[a for _, arms in fs for a in arms], subtitle=error.subtitle,
                  plot_px=blocks * 440 + (blocks - 1) * 40, facets=[t for t, _ in fs],
                  facet_sizes=[len(arms) for _, arms in fs])


def plot_optimizers(data: OptimizerData, colours: dict[str, str] | None = None,
                    facets: Facets | None = None) -> go.Figure:
    """Box plots of the error per arm (in facet order), one colour per optimizer, the best run marked."""
    fig = go.Figure()
    optimizers = sorted({b.optimizer for b in data.boxes})
    opt_colours = {o: OPTIMIZER_PALETTE[i % len(OPTIMIZER_PALETTE)] for i, o in enumerate(optimizers)}
    for opt in optimizers:
        boxes = [b for b in data.boxes if b.optimizer == opt]
        xs = [esc(b.arm) for b in boxes for _ in b.errors]
        ys = [float(e) for b in boxes for e in b.errors]
        fig.add_trace(go.Box(x=xs, y=ys, name=esc(opt), marker_color=opt_colours[opt], boxpoints="all",
                             jitter=0.4, pointpos=0, offsetgroup=esc(opt), legendgroup=esc(opt)))
        fig.add_trace(go.Scatter(x=[esc(b.arm) for b in boxes], y=[b.best for b in boxes], mode="markers",
                                 name=f"{esc(opt)} best", offsetgroup=esc(opt), legendgroup=esc(opt),
                                 marker={"symbol": "diamond", "size": 11, "color": opt_colours[opt],
                                         "line": {"width": 1, "color": "black"}}))
    for arm, gap in data.gaps.items():
        fig.add_annotation(x=esc(arm), y=1.0, yref="paper", yanchor="bottom", showarrow=False, text=f"{gap:+.2f}")
    fs = facet_list(facets, [b.arm for b in data.boxes])
    fig.update_layout(boxmode="group", scattermode="group")
    fig.update_xaxes(categoryorder="array", categoryarray=[esc(a) for _, arms in fs for a in arms])
    fig.update_yaxes(title_text="top-1 error (%)")
    title = data.title
    if data.gaps:
        title += f" (above: best {optimizers[-1]} - best {optimizers[0]})"
    return layout(fig, title, legend=[o for opt in optimizers for o in (opt, f"{opt} best")], plot_px=PANEL)


def figure_to_svg_name(name: str) -> str:
    """A file-name-safe form of a figure name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_layer_similarity(data: LinesData, colours: dict[str, str] | None = None,
                          facets: Facets | None = None) -> go.Figure:
    """Median patch similarity per block with its interquartile band; integer block ticks."""
    fig = plot_lines(data, colours, facets)
    fig.update_xaxes(dtick=1 if max((len(line.x) for line in data.lines), default=0) <= 16 else None, tick0=1)
    return fig

def _wrapped(sentence: str, width: int = 80) -> str:
    """A long sentence in lines of about `width` characters (hover text)."""
    import textwrap

    return "\n".join(textwrap.wrap(sentence, width, break_on_hyphens=False))


def plot_verdict_matrix(data: MatrixData, colours: dict[str, str] | None = None,
                        facets: Facets | None = None) -> go.Figure:
    """P(row better than column) as a heatmap (blue: the row model better), the value in each cell
    (bold when decided), decided cells framed, each cell's verdict sentence on hover; rows top to
    bottom and columns left to right in the models' order."""
    names = [esc(m) for m in data.models]
    n = len(names)
    text = [["" if not math.isfinite(v) else (f"<b>{v:.2f}</b>" if d else f"{v:.2f}") for v, d in zip(row, dec)]
            for row, dec in zip(data.p.tolist(), data.decided.tolist())]
    fig = go.Figure(go.Heatmap(
        z=[clean(row) for row in data.p], x=names, y=names, zmin=0, zmax=1, zmid=0.5, colorscale="RdBu", xgap=2,
        ygap=2, text=text, texttemplate="%{text}", textfont={"size": 11 if n <= 9 else 9},
        customdata=[[esc(_wrapped(s)) for s in row] for row in data.sentences],
        hovertemplate="%{customdata}<extra></extra>", showlegend=False,
        colorbar={"title": {"text": "P(row better)", "side": "right"}, "thickness": 12, "len": 0.9}))
    rows, cols = np.nonzero(data.decided)
    fig.add_trace(go.Scatter(
        x=[names[c] for c in cols], y=[names[r] for r in rows], mode="markers", name="decided (Holm-adjusted)",
        hoverinfo="skip", showlegend=True, marker={"symbol": "square-open", "size": max(12, 340 // max(n, 1)), "color": "#1d2330",
                                  "line": {"width": 2}}))
    fig.update_yaxes(autorange="reversed", title_text="row model", automargin=True, showgrid=False)
    fig.update_xaxes(title_text="column model", tickangle=-35, automargin=True, showgrid=False)
    fig = layout(fig, data.title, legend=["decided (Holm-adjusted)"], subtitle=data.subtitle,
                 plot_px=max(220, 42 * n) + 80)
    fig.update_layout(margin_l=110)
    return fig


__all__ = ["colour_map", "facet_list", "figure_to_svg_name", "plot_edf", "plot_hparams", "plot_layer_similarity",
           "plot_learning_curves", "plot_lines", "plot_optimizers", "plot_verdict_matrix"]
