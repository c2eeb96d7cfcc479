"""Static export of the report's figures as SVG files (kaleido drives a headless Chrome)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stability.cli import first_line

EXPORT_HINT = ("install kaleido (pip install kaleido) and Chrome/Chromium (e.g. apt-get install chromium, "
               "or point BROWSER_PATH at a Chrome binary)")


def export_figures(figures: list[tuple[str, Any]], out_dir: Path) -> list[Path]:
    """Write each (name, plotly figure) as `<name>.svg` into out_dir; RuntimeError with what to
    install when the machine cannot render them."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise RuntimeError(f"static export needs kaleido: {EXPORT_HINT}") from None
    import plotly.io as pio

    from stability.analysis.plots import figure_to_svg_name

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{figure_to_svg_name(name)}.svg" for name, _ in figures]
    try:
        pio.write_images([fig for _, fig in figures], paths, format="svg")
    except Exception as exc:
        raise RuntimeError(f"static export failed ({first_line(exc)[:200]}): {EXPORT_HINT}") from None
    return paths
