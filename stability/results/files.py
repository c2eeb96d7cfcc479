"""Atomic file writes: a reader (or a resumed sweep) sees the old file or the new one, never half.

Used by the results store (Parquet, study.yaml), the report and for checkpoints and teacher
files. A write never replaces a symbolic link or a special file: through a link it goes to the
link's target (atomically, in the target's folder); onto a FIFO, device, socket or folder it is
refused with `NotARegularFileError`.

On an object store (`stability.results.storage.ObjectPath`) there is no rename: the bytes are
written in one PUT, which a reader sees whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from stability.results.storage import ObjectPath, probe


class NotARegularFileError(OSError):
    """An atomic write was asked to replace something that is not a regular file."""


def _shareable(path: str) -> None:
    """mkstemp makes owner-only files; results get the usual umask-based mode instead."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def write_target(path: str | os.PathLike) -> Path:
    """Where an atomic write of `path` lands: `path` itself, or, when it is a symbolic link, the file
    it finally points to (an absent target is created). Raises NotARegularFileError when that is a
    folder, a FIFO, a device or a socket (an atomic rename would replace it with a plain file)."""
    if isinstance(path, ObjectPath):
        return path
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # follows the whole chain; a loop raises OSError (ELOOP) on use
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # absent (a file where a folder should be: see check_writable)
        return path
    if stat.S_ISREG(mode):
        return path
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    raise NotARegularFileError(code, f"is {kind}; give a regular file", str(path))


def probe_folder(folder) -> None:
    """A real write probe of `folder` (a folder can pass permission checks that the file system
    still refuses): on an object store one small PUT and its delete; on a disk a temporary file in
    the nearest folder that exists. An OSError names the folder, not the probe's random name."""
    if isinstance(folder, ObjectPath):
        probe(folder)
        return
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work when an atomic write of `path` could not happen: the target is not a
    regular file, or its folder refuses a new file (`probe_folder`). Returns the target."""
    target = write_target(path)
    probe_folder(target.parent)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary name beside the file `path` stands for (`write_target`) to write to: renamed onto
    it when the block ends, removed if it raises. On an object store the temporary file is local
    and its bytes go up in one PUT when the block ends."""
    if isinstance(path, ObjectPath):
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix)
        os.close(fd)
        try:
            yield tmp
            path.write_bytes(Path(tmp).read_bytes())
        finally:
            Path(tmp).unlink(missing_ok=True)
        return
    path = write_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        _shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())
