"""Mid-trial checkpoints: a trial's whole state at the end of an epoch, and how it comes back.

The state is everything the rest of the run depends on: weights, optimizer, schedule, EMA, the
step count, the curve so far and every random source (Python, NumPy, torch CPU and CUDA, the
data-order generator, the objective's own generator). A trial resumed from it ends with exactly
the result and curve of the same trial run without interruption (CPU, same thread count).

The engine writes the latest state only, atomically, into a folder it is given (the sweep gives
`<study>/checkpoints/<trial_id>/`, reachable by a retry, a `--resume` and a worker on another
node); the driver deletes the folder once the trial's row is stored. Written here rather than
with Ray's checkpoint API because the engine runs without Ray (`python -m stability.train`), and
a plain file in the study's storage is found the same way by all three kinds of restart.
The folder may be on an object store (a `pyarrow.fs` URI such as `s3://bucket/runs/study/checkpoints/<key>`):
the file is then written in one PUT and read back whole (stability/results/storage.py).
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stability.results.files import atomic_write_bytes
from stability.results.storage import ObjectPath, StoragePath, delete_tree, location

STATE_FILE = "state.pt"
STATE_FORMAT = 1
DEFAULT_INTERVAL_S = 300.0  # time-based default: short trials never pay, long ones lose at most this


@dataclass
class CheckpointPolicy:
    """When to checkpoint: every `every_epochs` epochs (0 = never), or, when it is None, at the end
    of the first epoch that ends `interval_s` seconds or more after the last checkpoint."""

    every_epochs: int | None = None
    interval_s: float = DEFAULT_INTERVAL_S

    def due(self, epoch: int, seconds_since_last: float) -> bool:
        if self.every_epochs is not None:
            return self.every_epochs > 0 and epoch % self.every_epochs == 0
        return seconds_since_last >= self.interval_s


@dataclass
class TrialCheckpoint:
    """The latest checkpoint of one trial (or one fused group) in `folder` (a path, or a URI string)."""

    folder: StoragePath
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    last_saved: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.folder = location(self.folder)

    @property
    def path(self) -> StoragePath:
        return self.folder / STATE_FILE

    def due(self, epoch: int) -> bool:
        return self.policy.due(epoch, time.monotonic() - self.last_saved)

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"format": STATE_FORMAT, **state}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
        self.last_saved = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none (a damaged file counts as none: the trial
        starts over rather than trusting it)."""
        try:
            source = io.BytesIO(self.path.read_bytes()) if isinstance(self.path, ObjectPath) else self.path
            state = torch.load(source, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            return None
        except Exception:  # truncated or foreign file
            return None
        return state if isinstance(state, dict) and state.get("format") == STATE_FORMAT else None

    def delete(self) -> None:
        delete_tree(self.folder)


def global_random_states() -> dict[str, Any]:
    """The process-wide random sources: Python, NumPy (timm's Mixup), torch CPU and CUDA."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_global_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def random_states(generator: torch.Generator, objective_rng: np.random.Generator) -> dict[str, Any]:
    """Every random source a trial draws from: the process-wide ones, its data order, its objective."""
    return {**global_random_states(), "data": generator.get_state(), "objective": objective_rng.bit_generator.state}


def set_random_states(states: dict[str, Any], generator: torch.Generator, objective_rng: np.random.Generator) -> None:
    set_global_random_states(states)
    generator.set_state(states["data"])
    objective_rng.bit_generator.state = states["objective"]


def capture(epoch: int, step: int, model, optimizer, scheduler, ema, generator: torch.Generator,
            objective_rng: np.random.Generator, progress: dict[str, Any]) -> dict[str, Any]:
    """A trial's state after `epoch` (and `step` optimizer steps); `progress`: the curve so far and the
    running totals the metrics are made of."""
    return {
        "epoch": epoch, "step": step,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "random": random_states(generator, objective_rng), "progress": progress,
    }


def restore(state: dict[str, Any], model, optimizer, scheduler, ema, generator: torch.Generator,
            objective_rng: np.random.Generator) -> dict[str, Any]:
    """Load a captured state into freshly built objects; returns its epoch, step and progress."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    set_random_states(state["random"], generator, objective_rng)
    return {"epoch": state["epoch"], "step": state["step"], **state["progress"]}
