"""Print a table with rich when it is installed, else as aligned plain text."""

from __future__ import annotations

import sys
from typing import Sequence


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], file=None) -> None:
    """Columns right-aligned except the first; cells are already formatted strings."""
    file = file or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(title, columns, rows, file)
        return
    console = Console(file=file)
    if not console.is_terminal:  # piped or captured: never wrap or cut a cell
        console = Console(file=file, width=max(console.width, 1000))
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_plain(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], file) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([f"{first:<{widths[0]}}", *(f"{c:>{w}}" for c, w in zip(rest, widths[1:]))])

    print(title, file=file)
    print(line(columns), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in rows:
        print(line(row), file=file)
