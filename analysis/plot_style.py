"""What every report figure shares: colours per arm, facets laid out as panels, one legend below
the plots sized for its rows, escaping of text from results (see `analysis.plots`)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
OPTIMIZER_PALETTE = qualitative.Dark2
PANEL = 300  # px of one row of panels
GAP = 70  # px between rows of panels (tick labels, the next row's titles)
MAX_COLS = 3
LEGEND_ROW = 21  # px per legend row
MAX_PER_ROW = 4  # legend entries of one facet that share a row
WIDE_LEGEND = 4  # a figure with more legend entries is laid out across the page (estimates its legend so)
Facets = Sequence[tuple[str, Sequence[str]]]


def colour_map(arms: Sequence[str], shades: Mapping[str, tuple[str, float]] | None = None) -> dict[str, str]:
    """One colour per arm, stable across figures. With `shades` (arm -> (family, size rank)),
    one hue per family and a shade per size, lighter for smaller, so each size's panel holds the
    same hues."""
    if not shades:
        return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}
    families = list(dict.fromkeys(shades[a][0] for a in arms))
    found = {}
    for i, family in enumerate(families):
        members = sorted((a for a in arms if shades[a][0] == family), key=lambda a: shades[a][1])
        for j, arm in enumerate(members):
            t = 0.0 if len(members) == 1 else -0.38 + 0.7 * j / (len(members) - 1)
            found[arm] = _shade(PALETTE[i % len(PALETTE)], t)
    return {arm: found[arm] for arm in arms}


def _shade(colour: str, t: float) -> str:
    """The colour mixed with white (t < 0) or black (t > 0) by |t|."""
    target = 255 if t < 0 else 0
    r, g, b = (round(c + (target - c) * abs(t)) for c in hex_to_rgb(colour))
    return f"#{r:02x}{g:02x}{b:02x}"


def esc(text: object) -> str:
    """Plotly-safe text: HTML escaped, line breaks as <br> (plotly reads label text as its own
    HTML subset and has no escaping option)."""
    return html.escape(str(text), quote=False).replace("\n", "<br>")


def rgba(colour: str, alpha: float) -> str:
    """A palette colour (#rrggbb) made translucent."""
    r, g, b = hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"


def colour_of(colours: dict[str, str] | None, arm: str, i: int) -> str:
    return (colours or {}).get(arm, PALETTE[i % len(PALETTE)])


def clean(a) -> list:
    """Plotly-safe values: non-finite numbers become gaps (None) in plain lists, the same JSON whatever
    plotly's encoding of numpy arrays."""
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in np.asarray(a).tolist()]


def facet_list(facets: Facets | None, arms: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The facets holding some of `arms` (in their order), arms in no facet in a last one."""
    present = list(dict.fromkeys(arms))
    found, placed = [], set()
    for title, members in facets or [("", present)]:
        held = tuple(a for a in members if a in present and a not in placed)
        placed.update(held)
        if held:
            found.append((str(title), held))
    rest = tuple(a for a in present if a not in placed)
    return found + ([("other" if found else "", rest)] if rest else [])


def ranks(facets: list[tuple[str, tuple[str, ...]]]) -> dict[str, int]:
    """Legend order: facet by facet."""
    return {a: i * 1000 + j for i, (_, arms) in enumerate(facets) for j, a in enumerate(arms)}


def wrap(n: int) -> tuple[int, int]:
    """(rows, cols) of n panels: one row up to MAX_COLS, 2 x 2 for four."""
    cols = n if n <= MAX_COLS else (2 if n == 4 else MAX_COLS)
    return math.ceil(n / cols), cols


def legend_rows(labels: Sequence[str], width: float) -> int:
    """Rows a horizontal legend of these labels takes at `width` px (a generous estimate)."""
    rows, used = 1, 0.0
    for label in labels:
        w = 46 + 7.0 * len(html.unescape(label))
        if used and used + w > width:
            rows, used = rows + 1, 0.0
        used += w
    return rows if labels else 0


def _rows_per_facet(sizes: Sequence[int]) -> dict:
    """Legend entries sized so that each facet's arms fill one row, when every facet holds as
    many (up to MAX_PER_ROW) and there are several facets."""
    if len(sizes) > 1 and len(set(sizes)) == 1 and 1 < sizes[0] <= MAX_PER_ROW:
        return {"entrywidth": 1 / sizes[0] - 0.05, "entrywidthmode": "fraction"}
    return {}


def layout(fig: go.Figure, title: str, *, rows: int = 1, cols: int = 1, legend: Sequence[str] = (),
           subtitle: str = "", plot_px: int | None = None, facets: Sequence[str] = ("",),
           facet_sizes: Sequence[int] = (), titled: bool = False) -> go.Figure:
    """Title (and a line on how to read it), one legend below the plots sized for its rows (a
    row per facet when `facet_sizes` allow), and a height that gives the plots `plot_px`
    (default: `rows` rows of PANEL px) besides them; `titled`: panels have titles above them."""
    for axis in [*fig.select_xaxes(), *fig.select_yaxes()]:  # an axis told to match itself: plotly warns
        if axis.matches == axis.plotly_name.replace("axis", ""):
            axis.matches = None
    per_facet = _rows_per_facet(facet_sizes)
    legend_px = LEGEND_ROW * (math.ceil(len(legend) / facet_sizes[0]) if per_facet
                              else legend_rows(legend, 560 if cols == 1 and len(legend) <= WIDE_LEGEND else 1150))
    top = 50 + (17 * (subtitle.count("\n") + 1) + 3 if subtitle else 0) + (20 if titled or any(facets) else 0)
    bottom = 56 + legend_px
    plot_px = rows * PANEL + (rows - 1) * GAP if plot_px is None else plot_px
    height = plot_px + top + bottom
    fig.update_layout(  # the title block hangs from the top, so its subtitle lines never reach the panel titles
        title={"text": esc(title), "font": {"size": 15}, "subtitle": {"text": esc(subtitle), "font": {"size": 11.5}},
               "yref": "container", "y": 1 - 12 / height, "yanchor": "top"},
        template="plotly_white", height=height, margin={"l": 60, "r": 20, "t": top, "b": bottom},
        hovermode="closest", meta={"facets": list(facets)},
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0, "x": 0, "xanchor": "left",
                "font": {"size": 11.5}, **per_facet},
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif", "size": 12},
    )
    return fig


def axis_id(fig: go.Figure, row: int, col: int, which: str) -> str:
    """The axis id ('x3', 'y') of a subplot."""
    sub = fig.get_subplot(row, col)
    return getattr(sub, f"{which}axis").plotly_name.replace("axis", "")


