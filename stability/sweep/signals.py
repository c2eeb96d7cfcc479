"""One path for SIGINT and SIGTERM while a sweep runs: both stop the trials, keep the finished ones
and print the resume command; the exit code says which came (130 / 143)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM


class StopSignals:
    """SIGINT and SIGTERM take one path while a sweep runs. Inside Ray Tune's `fit` (`in_tune`), a
    SIGTERM is handed to the SIGINT handler Tune installs there, which stops the trials and returns;
    elsewhere it raises KeyboardInterrupt, as SIGINT does. The first signal sets the exit code."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_tune = False
        self.defer = False
        self._previous: dict[int, object] = {}

    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED

    def _on_term(self, signum, frame) -> None:
        self.signum = self.signum or signum
        if self.defer:
            return
        handler = signal.getsignal(signal.SIGINT)
        if self.in_tune and callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt

    def install(self) -> None:
        """(Re)install the SIGTERM handler."""
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_term)
            # a system call of Ray's native code is restarted, not failed with EINTR; the handler runs
            # when the call returns to Python
            signal.siginterrupt(signal.SIGTERM, False)
            self._previous.setdefault(signal.SIGTERM, previous)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Around `ray.init`: it installs SIGTERM handlers of its own (one exits 15, a local instance's
        exits 1, both without the resume command), and a stop in the middle of it leaves Ray half
        started (its shutdown then aborts). Here this sweep's handler stays installed, a SIGTERM is
        only noted, and it takes effect (KeyboardInterrupt) once `ray.init` has returned."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        real = signal.signal

        def keep_ours(signum, handler):
            if signum == signal.SIGTERM:
                return signal.getsignal(signum)
            return real(signum, handler)

        self.defer = True
        signal.signal = keep_ours  # ray.init calls signal.signal(SIGTERM, ...) through the module
        try:
            yield
        finally:
            signal.signal = real
            self.defer = False
            self.install()  # again: Ray's native (C++) handler may have replaced it below Python
        if self.signum is not None:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def tune(self) -> Iterator[None]:
        """Around Tune's fit: SIGTERM goes to Tune's SIGINT handler; Tune's handler (which stays
        installed after fit returns and ignores a later Ctrl-C) is replaced by the previous one."""
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT)
        self.in_tune = True
        try:
            yield
        finally:
            self.in_tune = False
            if on_main and previous is not None:
                signal.signal(signal.SIGINT, previous)
