"""Where a study's files live: a local path, or a URI that `pyarrow.fs` resolves (`s3://`, `gs://`,
`hdfs://`, ...; `file://` is a local path).

`location(text)` gives a `pathlib.Path` for a local path (the results layer then behaves exactly as
on any local folder: temporary file + rename, the O_EXCL study lock) and an `ObjectPath` for an
object store: the small part of pathlib the results layer uses (`/`, `name`, `stem`, `parent`,
`exists`, `is_file`, `is_dir`, `read_bytes`, `read_text`, `write_bytes`, `unlink`, ...) on a pyarrow
`FileSystem`. What differs there:
- no rename: a file is written in one PUT of its full bytes (`write_bytes`; an object becomes
  visible whole or not at all), never through a temporary name; moving a file (a damaged one
  moved aside) is a copy then a delete;
- no folders: `mkdir` does nothing, a folder exists while it holds a file;
- no create-if-absent: the study lock is advisory (`stability.results.lock.ObjectStudyLock`).

A custom endpoint goes in the URI's query (`s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http`);
credentials come from each store's usual environment (AWS_ACCESS_KEY_ID, ..., GOOGLE_APPLICATION_CREDENTIALS).
Credentials written into the URI (`s3://KEY:SECRET@bucket/...`, or a query parameter that names a
secret) still work but are never shown: `str()` of an ObjectPath (used in every message, the resume
command and the report) leaves them out; only `full_uri()` keeps them, to hand the location to a
trial process.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # two letters or more: not a Windows drive
_SECRET = re.compile(r"secret|token|password|credential|access_key|key_id|private", re.IGNORECASE)


def is_uri(text: str | os.PathLike) -> bool:
    return isinstance(text, str) and bool(_URI.match(text))


def public_query(query: str) -> str:
    """The URI query without the parameters that carry secrets (the others kept as written)."""
    return "&".join(item for item in query.split("&") if item and not _SECRET.search(item.partition("=")[0]))


@functools.lru_cache(maxsize=32)
def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """One filesystem per URI (building one, e.g. S3's, costs a round trip)."""
    return pafs.FileSystem.from_uri(uri)


class ObjectPath:
    """A file or folder on a pyarrow filesystem (an object store), addressed like a pathlib path."""

    def __init__(self, fs: pafs.FileSystem, path: str, base_uri: str, base_path: str, query: str = ""):
        self.fs = fs
        self.path = path.rstrip("/") or path
        self.base_uri = base_uri.rstrip("/")  # the URI (no query) that `base_path` was resolved from
        self.base_path = base_path.rstrip("/")
        self.query = query

    # --- names -----------------------------------------------------------------------------
    def _with(self, path: str) -> ObjectPath:
        return ObjectPath(self.fs, path, self.base_uri, self.base_path, self.query)

    def __truediv__(self, part: str | os.PathLike) -> ObjectPath:
        return self._with(posixpath.join(self.path, str(part)))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0] if self.suffix else self.name

    @property
    def parent(self) -> ObjectPath:
        return self._with(posixpath.dirname(self.path) or self.path)

    def with_suffix(self, suffix: str) -> ObjectPath:
        return self._with(posixpath.join(posixpath.dirname(self.path), self.stem + suffix))

    def _uri(self, base: str) -> str:
        if self.path == self.base_path or self.path.startswith(self.base_path + "/"):
            return base + self.path[len(self.base_path):]
        parts = urlsplit(base)
        return f"{parts.scheme}://{parts.netloc}/{self.path.lstrip('/')}"

    def full_uri(self) -> str:
        """The URI with whatever credentials it was given (user info, query): for a process that
        must reach the same storage; never printed or written to results."""
        return self._uri(self.base_uri) + (f"?{self.query}" if self.query else "")

    def __str__(self) -> str:
        parts = urlsplit(self.base_uri)
        host = parts.netloc.rpartition("@")[2]  # without user:secret@
        query = public_query(self.query)
        return self._uri(f"{parts.scheme}://{host}{parts.path}") + (f"?{query}" if query else "")

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and (self.full_uri() == other.full_uri())

    def __hash__(self) -> int:
        return hash(self.full_uri())

    # --- what is there -----------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_symlink(self) -> bool:
        return False

    def mtime(self) -> float | None:
        info = self.info()
        return info.mtime.timestamp() if info.mtime is not None else None

    def files(self) -> list[ObjectPath]:
        """The files directly in this folder (none when it does not exist), sorted by name."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True, recursive=False))
        return sorted((self._with(i.path) for i in infos if i.type == pafs.FileType.File), key=lambda p: p.path)

    def glob(self, pattern: str) -> list[ObjectPath]:
        return [p for p in self.files() if fnmatch.fnmatchcase(p.name, pattern)]

    # --- reading and writing -----------------------------------------------------------------
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """The whole file in one PUT: readers see the old object or the new one, never a part."""
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Nothing to do: on an object store a folder exists while it holds a file."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Delete the folder and everything under it (nothing when it is absent)."""
        try:
            self.fs.delete_dir(self.path)
        except FileNotFoundError:
            pass

    def move(self, dest: ObjectPath) -> None:
        """Copy then delete (an object store has no rename); FileNotFoundError when absent."""
        if not self.is_file():
            raise FileNotFoundError(2, "No such file", str(self))
        self.fs.copy_file(self.path, dest.path)
        self.fs.delete_file(self.path)


StoragePath = Path | ObjectPath


def location(where: str | os.PathLike | ObjectPath) -> StoragePath:
    """A local path (a `file://` URI included) as a Path, any other pyarrow.fs URI as an ObjectPath.
    Raises ValueError (unknown scheme, bad query) or OSError (e.g. the store cannot be reached) in
    one line for a URI pyarrow cannot resolve."""
    if isinstance(where, (Path, ObjectPath)):
        return where
    if not is_uri(where):
        return Path(where)
    fs, path = _resolve(where)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    base, _, query = where.partition("?")
    return ObjectPath(fs, path, base, path, query)


def full_uri(path: StoragePath) -> str:
    """The string that `location` turns back into `path` (for a trial process: secrets kept)."""
    return path.full_uri() if isinstance(path, ObjectPath) else str(path)


def arrow_source(path: StoragePath) -> tuple[str | Path, pafs.FileSystem | None]:
    """What pyarrow's readers take for `path`: (path, filesystem), the filesystem None when local."""
    return (path.path, path.fs) if isinstance(path, ObjectPath) else (path, None)


def delete_tree(path: StoragePath) -> None:
    """Delete a folder and what it holds (nothing when absent)."""
    if isinstance(path, ObjectPath):
        path.rmtree()
    else:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def move(src: StoragePath, dest: StoragePath) -> None:
    """Rename a file (local), or copy then delete it (object store)."""
    if isinstance(src, ObjectPath):
        src.move(dest)
    else:
        os.rename(src, dest)


def probe(folder: StoragePath) -> None:
    """A real write check of an object store folder: one small PUT and its delete (OSError when the
    bucket does not exist or the credentials are missing or refused)."""
    import uuid

    assert isinstance(folder, ObjectPath)
    target = folder / f".probe-{uuid.uuid4().hex}"
    target.write_bytes(b"")
    target.unlink(missing_ok=True)


def public_uri(text: str) -> str:
    """A path or URI as it may be shown: a URI without user info (`user:secret@`) nor query secrets."""
    if not is_uri(text):
        return text
    parts = urlsplit(text)
    host = parts.netloc.rpartition("@")[2]
    query = public_query(parts.query)
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{query}" if query else "")
