"""Live progress of a sweep (done / running / total, ETA, best error) and the closing summary.

Knows no Ray: the Tune callback in `tune_trial` forwards trial starts and ends here."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class SweepProgress:
    """One live line on a terminal; one line per finished trial otherwise (logs, CI)."""

    def __init__(self, total: int, already_done: int, console: Console | None = None, estimate: Any = None):
        """`estimate` (stability.sweep.estimate.Estimate): its processes' shares of the wall time give the
        ETA from the start; once processes finish, the same shares are scaled by the pace measured
        (a fused group counts once, when its first trial's row is stored)."""
        self.shares: list[float] = list(getattr(estimate, "process_share_s", None) or [])
        self.owner: dict[str, int] = dict(getattr(estimate, "trial_process", None) or {})
        self.expected_s = sum(self.shares)
        self.credited: set[int] = set()
        self.done_share = 0.0
        self.total = total
        self.done = already_done
        self.started_with = already_done
        self.running: dict[str, int] = {}  # Tune trial id -> study trials it runs (fused groups run several)
        self.failed = 0
        self.diverged = 0
        self.best: tuple[float, str] | None = None
        self.start = time.monotonic()
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.live = Live(console=self.console, refresh_per_second=2, transient=True) if self.console.is_terminal else None

    def __getstate__(self) -> dict[str, Any]:
        """Tune snapshots its callbacks; terminal handles stay out of the snapshot."""
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "live")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, console=Console(stderr=True, soft_wrap=True), live=None)

    def __enter__(self) -> "SweepProgress":
        if self.live is not None:
            self.live.start()
            self.live.update(self.line())
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()

    def eta_seconds(self) -> float:
        elapsed = time.monotonic() - self.start
        if self.expected_s > 0:  # the estimate's figures: expected time left, at the pace measured so far
            if self.done_share <= 0:
                return max(0.0, self.expected_s - elapsed)
            return max(0.0, self.expected_s - self.done_share) * elapsed / self.done_share
        finished_here = self.done - self.started_with
        if finished_here == 0:
            return math.inf
        rate = finished_here / elapsed
        return (self.total - self.done) / rate

    def line(self) -> str:
        best = f"best {self.best[0]:.2f}% ({self.best[1]})" if self.best else "best -"
        extra = "".join(f" · {n} {what}" for n, what in ((self.diverged, "diverged"), (self.failed, "failed")) if n)
        return (f"trials {self.done}/{self.total} done · {sum(self.running.values())} running{extra} · {best} · "
                f"ETA {format_duration(self.eta_seconds())} · elapsed {format_duration(time.monotonic() - self.start)}")

    def started(self, key: str, size: int) -> None:
        """A process started `size` study trials (a fused group runs several)."""
        self.running[key] = size
        self._refresh()

    def ended(self, key: str) -> None:
        self.running.pop(key, None)
        self._refresh()

    def finished(self, row: dict[str, Any]) -> None:
        """Called by the store callback once a trial's row is on disk."""
        self.done += 1
        process = self.owner.get(row.get("trial_id", ""))
        if process is not None and process not in self.credited:
            self.credited.add(process)
            self.done_share += self.shares[process]
        self.failed += row["status"] == "failed"
        self.diverged += row["status"] == "diverged"
        err = row.get("top1_err")
        if row["status"] == "ok" and err is not None and (self.best is None or err < self.best[0]):
            self.best = (err, f"{row['model']} {row['optimizer']}")
        if self.live is None:
            err_text = f"{err:.2f}%" if err is not None and math.isfinite(err) else "-"
            print(f"[{self.done}/{self.total}] {row['model']} {row['optimizer']} lr={row['lr']:.3g} "
                  f"wd={row['weight_decay']:.3g} -> {row['status']} {err_text} | {self.line()}",
                  file=sys.stderr, flush=True)
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.line())


def print_summary(trials, console: Console) -> None:
    """Per model, optimizer and epochs: trials, best and median error, diverged, failed (analysis.stats)."""
    from stability.analysis.stats import group_stats

    stats = group_stats(trials, n_boot=100, n_range_boot=100)  # the intervals are the report's, not needed here
    table = Table(title="top-1 error (%) per model, optimizer and epochs", title_justify="left")
    for column in ("model", "optimizer", "epochs", "n", "best", "median", "diverged", "failed"):
        table.add_column(column, justify="left" if column in ("model", "optimizer") else "right")
    for row in stats.to_dict(orient="records"):
        best, median = (f"{row[k]:.2f}" if row[k] is not None and math.isfinite(row[k]) else "-" for k in ("min", "median"))
        table.add_row(str(row["model"]), str(row["optimizer"]), str(row["epochs"]), str(row["n"] + row["n_failed"]),
                      best, median, str(row["n_diverged"]), str(row["n_failed"]))
    console.print(table)
