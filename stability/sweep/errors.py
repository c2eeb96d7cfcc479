"""Failures of the machine a sweep writes to, told in one line: a full disk, a quota, a read-only or
vanished results folder while the sweep writes its results (DESIGN.md: exit 2, one line, no traceback).

The results are written by the driver (study.yaml, then one file per trial from Ray Tune's callback);
Tune re-raises a callback's exception as a `TuneError` holding only its traceback text, with the
original `OSError` as its `__context__`, so the error is looked for along the exception chain.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shlex
from collections.abc import Iterator

from stability.cli import UsageError

# errno values that mean "this storage cannot take the write", not a bug in the sweep
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                            errno.EFBIG, errno.ESTALE})
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # pyarrow's OSErrors carry it in the text only


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _errno(exc: OSError) -> int | None:
    if exc.errno is not None:
        return exc.errno
    found = _ERRNO_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def storage_failure(exc: BaseException) -> OSError | None:
    """The OSError of a failed write behind `exc` (itself or along its chain), or None."""
    for link in _chain(exc):
        if isinstance(link, OSError) and _errno(link) in STORAGE_ERRNOS:
            return link
    return None


def _command_line(argv: list[str] | None) -> argparse.Namespace:
    """STUDY, --storage and --address as the sweep's command line gives them."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("study", nargs="?", default=None)
    parser.add_argument("--storage", default="runs")
    parser.add_argument("--address", default=None)
    try:
        return parser.parse_known_args(argv)[0]
    except SystemExit:  # the sweep has parsed it already; this only shapes the message
        return argparse.Namespace(study=None, storage="runs", address=None)


def storage_message(error: OSError, argv: list[str] | None = None) -> str:
    """One line: the path that could not be written, why, and how to finish the study."""
    args = _command_line(argv)
    path = error.filename if isinstance(error.filename, (str, os.PathLike)) else args.storage
    code = _errno(error)
    reason = error.strerror or (os.strerror(code) if code is not None else str(error).splitlines()[0])
    resume = ["python -m stability.sweep", *([shlex.quote(args.study)] if args.study else []),
              "--storage", shlex.quote(args.storage), *(["--address", shlex.quote(args.address)] if args.address else [])]
    return (f"--storage: cannot write {os.fsdecode(path)}: {reason}; finished trials are kept: "
            f"make room (or fix the folder), then run `{' '.join([*resume, '--resume'])}`")


@contextlib.contextmanager
def storage_errors(argv: list[str] | None = None) -> Iterator[None]:
    """Around `sweep(argv)`: a write the storage refused becomes a UsageError (exit 2, one line);
    every other exception passes unchanged."""
    try:
        yield
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:
        error = storage_failure(exc)
        if error is None:
            raise
        raise UsageError(storage_message(error, argv)) from None
