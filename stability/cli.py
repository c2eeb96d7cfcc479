"""Helpers shared by the command-line entry points (`python -m stability.sweep|train|report`)."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_USAGE = 2  # invalid input: one line on stderr, no traceback, nothing written
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)


class UsageError(Exception):
    """Invalid input: reported as one line on stderr with exit code 2, never a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty): what a
    one-line error shows of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse says the rest in its one line)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
