"""The page model as one self-contained HTML document that works offline (templates/*.html.j2).

plotly.js is inlined once in the head; a Content-Security-Policy forbids every network request,
so the page renders the same with or without a connection. Jinja2 escapes every value the
templates print; only the page's own markup (the policy, plotly.js, plotly's figure divs) is
marked safe here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import jinja2
from markupsafe import Markup

from stability.report.page import Block, Figure, Page

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")
FIGURE_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"},
                 "modeBarButtonsToRemove": ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d",
                                            "toggleSpikelines"]}


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of this package, autoescaped, failing on any undefined name."""
    return jinja2.Environment(loader=jinja2.PackageLoader("stability.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def figure_div(figure: Any, div_id: str) -> Markup:
    """A figure as a div plus its drawing script (plotly.js itself is in the page head); text from
    results reaches plotly already escaped by `analysis.plots`."""
    import plotly.io as pio

    height = int(figure.layout.height or 420)
    return Markup(pio.to_html(figure, include_plotlyjs=False, full_html=False, config=FIGURE_CONFIG, div_id=div_id,
                              default_width="100%", default_height=f"{height}px"))


def layout(blocks: Sequence[Block]) -> Iterator[tuple[str, Any]]:
    """(kind, block) in order, with consecutive figures that are not wide gathered into one
    ("grid", [figures]) so they share rows."""
    row: list[Figure] = []
    for block in blocks:
        if isinstance(block, Figure) and not block.wide:
            row.append(block)
            continue
        if row:
            yield "grid", row
            row = []
        yield type(block).__name__.lower(), block
    if row:
        yield "grid", row


def render(page: Page) -> str:
    """The whole document; figures get the ids fig-1, fig-2, ... in page order."""
    from plotly.offline import get_plotlyjs

    divs = {id(f): figure_div(f.figure, f"fig-{i}") for i, f in enumerate(page.figures(), start=1)}
    return environment().get_template("report.html.j2").render(
        page=page, csp=Markup(CSP), plotly_js=Markup(get_plotlyjs()), layout=layout, plot=lambda f: divs[id(f)])
