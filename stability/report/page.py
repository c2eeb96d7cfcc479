"""The page model of the report: a page of sections holding tables, figures and text.

Plain dataclasses of raw text (never HTML): `stability.report.sections` builds them from the
summary and the figure registry, `stability.report.render` turns them into HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cell:
    """One table cell: its text, an optional second line in small type (an interval), a CSS class."""

    text: str
    sub: str = ""
    cls: str = ""  # "text" (left-aligned), "wrap" (wrapped) or "msg" (a long message)
    small: bool = False  # the whole text in small type


@dataclass
class Table:
    """Column titles with their CSS class, and rows of cells."""

    columns: list[tuple[str, str]]
    rows: list[list[Cell]]


@dataclass
class Figure:
    """A plotly figure with the name it is exported under; `wide` spans the page, others share a
    row. `facets`: the titles of its panels (small multiples; empty: one panel). `folded`: shown
    one click away (in its section's Details block)."""

    name: str
    figure: Any
    wide: bool = False
    facets: tuple[str, ...] = ()
    folded: bool = False


@dataclass
class Heading:
    """A sub-heading within a section."""

    text: str


@dataclass
class Note:
    """A paragraph of explanation in muted type."""

    text: str


@dataclass
class Verdict:
    """One verdict sentence; `decided` ones stand out."""

    text: str
    decided: bool


@dataclass
class Listing:
    """A folded block of preformatted text (a study spec) under a one-line summary."""

    summary: str
    text: str


@dataclass
class Details:
    """Blocks folded away under a one-line summary (the full detail behind a faceted view)."""

    summary: str
    blocks: list[Table | Figure | Heading | Note | Verdict] = field(default_factory=list)


Block = Table | Figure | Heading | Note | Verdict | Listing | Details


@dataclass
class Section:
    """A titled part of the page, linked from the navigation bar as `nav`."""

    anchor: str
    title: str
    nav: str
    blocks: list[Block] = field(default_factory=list)
    note: str = ""


@dataclass
class Page:
    """The whole report: a title, subtitle lines and the sections in order; `facets` says how its
    figures are split into panels ({by, panels: [{title, models}]}, `--json` key `facets`)."""

    title: str
    subtitle: list[str]
    sections: list[Section]
    facets: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> list[Figure]:
        """Every figure in page order, those folded in Details blocks included."""
        return [f for s in self.sections for b in s.blocks
                for f in (b.blocks if isinstance(b, Details) else [b]) if isinstance(f, Figure)]
