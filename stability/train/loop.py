"""The epoch loop of every trial, written once: continue from the trial's checkpoint, train an
epoch, time it, evaluate, checkpoint. A trial alone (`engine.run_trial`) and a fused group
(`fused.engine.run_fused_trials`) supply only what differs, an `Epochs`: one model or K, how an
epoch trains and is evaluated, what their state holds. The set-up both share (the data, the steps
of an epoch, autocast, a curve point) is here too.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from stability.data import load_dataset
from stability.spec.errors import TrialSetupError
from stability.spec.trial import Recipe, TrialConfig
from stability.train.checkpoint import TrialCheckpoint


def trial_data(cfg: TrialConfig, device: torch.device, data=None):
    """`data` when given (calibration passes a timed view of it), else the dataset `cfg` names, on `device`."""
    if data is not None:
        return data
    ds = cfg.dataset
    return load_dataset(ds.name, root=ds.root, img_size=ds.img_size, device=device, download=ds.download, **ds.options)


def epoch_steps(data, recipe: Recipe, world: int = 1) -> int:
    """Optimizer steps in an epoch of `recipe.batch_size` images split over `world` workers
    (TrialSetupError when the batch does not split or is larger than the training set)."""
    if recipe.batch_size % world:
        raise TrialSetupError(f"train.batch_size {recipe.batch_size} is not divisible by {world} workers")
    steps = data.steps_per_epoch(recipe.batch_size // world, world)
    if steps < 1:
        raise TrialSetupError(f"train.batch_size {recipe.batch_size} exceeds the {data.train_size} training images")
    return steps


def autocast_for(device: torch.device, recipe: Recipe) -> Callable[[], Any]:
    """A context factory: bf16 autocast on CUDA when the recipe asks for it, else nothing."""
    if device.type == "cuda" and recipe.precision == "bf16":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def curve_point(epoch: int, train_loss: float, err: float, optimizer: torch.optim.Optimizer,
                clock: Clock) -> dict[str, Any]:
    """One point of a trial's curve (the curves table's columns), taken when the epoch is evaluated."""
    return {"epoch": epoch, "train_loss": train_loss, "top1_err": err, "lr": optimizer.param_groups[0]["lr"],
            "elapsed_s": clock.elapsed()}


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
