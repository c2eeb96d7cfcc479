"""Failures of the machine a sweep writes to, told in one line: a full disk, a quota, a read-only or
vanished results folder, an object store that cannot be reached or refuses a request, while the
sweep reads or writes its results (docs/architecture.md, "Commands and exit codes": exit 2, one line, no traceback).

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
from collections.abc import Iterator

from stability.cli import UsageError, first_line
from stability.results.storage import public_uri
from stability.sweep.commands import resume_command

# errno values that mean "this storage cannot take the write", not a bug in the sweep
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                            errno.EFBIG, errno.ESTALE})
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # pyarrow's OSErrors carry it in the text only
# pyarrow's object-store filesystems raise OSErrors without errno whose text names the store's SDK:
# an unreachable endpoint, a missing bucket, refused credentials, a throttled or failing store
_OBJECT_STORE_TEXT = re.compile(r"\bAWS Error\b|google::cloud")


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


def is_object_store_error(exc: BaseException) -> bool:
    """An object store (S3, GCS) refused or could not serve a request."""
    return isinstance(exc, OSError) and _errno(exc) is None and bool(_OBJECT_STORE_TEXT.search(str(exc)))


def storage_failure(exc: BaseException) -> OSError | None:
    """The OSError of a failed write (or an object store's failed request) behind `exc`, itself or
    along its chain, or None."""
    for link in _chain(exc):
        if isinstance(link, OSError) and (_errno(link) in STORAGE_ERRNOS or is_object_store_error(link)):
            return link
    return None


def _command_line(argv: list[str] | None) -> argparse.Namespace:
    """STUDY, --storage and --address as the sweep's command line gives them."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("study", nargs="?", default=None)
    parser.add_argument("--storage", default="runs")
    parser.add_argument("--address", default=None)
    parser.add_argument("--mlflow", default=None)
    parser.add_argument("--report", action="store_true")
    try:
        return parser.parse_known_args(argv)[0]
    except SystemExit:  # the sweep has parsed it already; this only shapes the message
        return argparse.Namespace(study=None, storage="runs", address=None, mlflow=None, report=False)


def storage_message(error: OSError, argv: list[str] | None = None) -> str:
    """One line: the path that could not be written, why, and how to finish the study."""
    args = _command_line(argv)
    again = resume_command(args)
    if is_object_store_error(error):
        reason = " ".join(str(error).split())
        return (f"--storage: the object store failed: {reason}; finished trials are kept: check the endpoint, the "
                f"bucket and the credentials in the environment, then run `{again}`")
    path = error.filename if isinstance(error.filename, (str, os.PathLike)) else public_uri(args.storage)
    code = _errno(error)
    reason = error.strerror or (os.strerror(code) if code is not None else first_line(error))
    return (f"--storage: cannot write {os.fsdecode(path)}: {reason}; finished trials are kept: "
            f"make room (or fix the folder), then run `{again}`")


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
