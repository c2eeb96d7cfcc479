"""The study lock on an object store (`--storage s3://...`): the rules of `stability.results.lock`
with what a store offers, one read or one PUT per step (see that module's docstring for why it is
advisory there)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

from stability.results.lock import Found, StudyLock
from stability.results.storage import location


ADVISORY_SETTLE_S = 0.5  # on an object store: how long a new lock's writer waits before reading it back


@dataclass
class ObjectStudyLock(StudyLock):
    """The study lock on an object store: the same file, holder record, lease and staleness rules,
    written in one PUT when absent and read back to check it is ours (no create-if-absent exists
    there; see the module docstring). No guard file: each step is one read or one PUT."""

    def __post_init__(self) -> None:
        self.folder = location(self.folder)
        super().__post_init__()

    def _read(self) -> Found | None:
        try:
            data = self.path.read_bytes()[:65536]
            mtime = self.path.mtime()
        except FileNotFoundError:
            return None
        if not data and not self.path.exists():
            return None
        try:
            holder = json.loads(data)
        except ValueError:
            holder = None
        age = time.time() - mtime if mtime is not None else 0.0
        return Found(holder if isinstance(holder, dict) else None, age, (mtime, data))

    def _guarded(self):
        return contextlib.nullcontext()

    def _unlink(self) -> None:
        self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        if self._read() is not None:
            return False
        since = time.time()
        self.path.write_bytes(self._record(since))
        time.sleep(ADVISORY_SETTLE_S)  # a writer racing this one has most likely written by now
        if not self._ours(self._read()):
            return False
        self._since = since
        return True
