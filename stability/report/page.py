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
    """A plotly figure with the name it is exported under; `wide` spans the page, others share a row."""

    name: str
    figure: Any
    wide: bool = False


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


Block = Table | Figure | Heading | Note | Verdict | Listing


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
    """The whole report: a title, subtitle lines and the sections in order."""

    title: str
    subtitle: list[str]
    sections: list[Section]

    def figures(self) -> list[Figure]:
        """Every figure in page order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]
