"""The epoch loop of every trial, written once: continue from the trial's checkpoint, train an
epoch, time it, evaluate, checkpoint. A trial alone (`engine.run_trial`) and a fused group
(`fused.engine.run_fused_trials`) supply only what differs, an `Epochs`: one model or K, how an
epoch trains and is evaluated, what their state holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from stability.train.checkpoint import TrialCheckpoint


class Epochs(Protocol):
    """What an engine gives the loop: its trials' training, evaluation and state."""

    def live(self) -> bool:
        """Whether any of its trials still trains (False once every one diverged)."""

    def train(self, epoch: int) -> None:
        """Train one epoch (a trial whose loss goes non-finite stops: diverged)."""

    def evaluate(self, epoch: int, clock: Clock) -> None:
        """After a trained epoch: evaluate the trials still training, record and report their points."""

    def capture(self) -> dict[str, Any]:
        """The state after the epoch just ended (tensors and plain containers only)."""

    def restore(self, state: dict[str, Any]) -> None:
        """Load a captured state into the freshly built trials (raises when it does not fit them)."""

    def replay(self) -> None:
        """Pass the restored epochs' points to the listener again (a new listener gets the whole curve)."""


@dataclass
class Clock:
    """The trial's time: `start` is moved back by the time a resumed run had already spent."""

    start: float = field(default_factory=time.perf_counter)
    train_seconds: float = 0.0  # inside epochs' training only

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def run_epochs(epochs: Epochs, n_epochs: int, clock: Clock, device: torch.device, owners: list,
               checkpoint: TrialCheckpoint | None, rank: int = 0, log: Callable[[str], None] | None = None) -> bool:
    """Run epochs 1..n_epochs (after the last saved one when `checkpoint` holds a state of `owners`).
    False when that state names them but does not fit them: it is refused (said once) and the caller
    starts over with freshly built trials. Rank 0 of data-parallel workers writes the checkpoints."""
    first = 1
    saved = checkpoint.bind(owners).load() if checkpoint is not None else None
    if saved is not None:  # a retry or a resume: continue after the last saved epoch
        try:
            epochs.restore(saved)
            first = int(saved["epoch"]) + 1
            clock.train_seconds = float(saved["train_seconds"])
            clock.start -= float(saved["elapsed_s"])  # elapsed and wall time count the earlier run too
        except Exception as exc:
            checkpoint.refuse_unfit(exc)
            return False
        epochs.replay()
        if log is not None:
            log(f"resumed after epoch {first - 1} from {checkpoint.path}")
    for epoch in range(first, n_epochs + 1):
        if not epochs.live():
            break
        epoch_start = time.perf_counter()
        epochs.train(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clock.train_seconds += time.perf_counter() - epoch_start
        if not epochs.live():
            break
        epochs.evaluate(epoch, clock)
        if checkpoint is not None and rank == 0 and epoch < n_epochs and checkpoint.due(epoch):
            checkpoint.save({**epochs.capture(), "epoch": epoch, "train_seconds": clock.train_seconds,
                             "elapsed_s": clock.elapsed()})
    return True
