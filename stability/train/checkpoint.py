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
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stability.results.files import atomic_write_bytes
from stability.results.storage import ObjectPath, StoragePath, delete_tree, location
from stability.train.owner import OWNER_FILE, checkpoint_owner, owner_mismatch

STATE_FILE = "state.pt"
STATE_FORMAT = 3  # 2: loaded with weights_only=True, names its owner; 3: the epoch loop's times beside it
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
    """The latest checkpoint of one trial (or one fused group) in `folder` (a path, or a URI string).

    The engine binds it to its trials (`bind`): a saved state names them (`owner.checkpoint_owner`),
    and `load` returns only a state of exactly those trials. Anything else there (a copy from another
    trial, another group, a damaged or refused file, a pickle that would run code) counts as no
    checkpoint: said once on stderr, and the trial starts over."""

    folder: StoragePath
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    last_saved: float = field(default_factory=time.monotonic)
    owner: dict[str, Any] | None = None
    ignored: str | None = None  # why the state found here is not used; "" once this run saved its own

    def __post_init__(self) -> None:
        self.folder = location(self.folder)

    @property
    def path(self) -> StoragePath:
        return self.folder / STATE_FILE

    def bind(self, cfgs: list) -> TrialCheckpoint:
        """Whose checkpoint this is: the trial, or the fused group's members in order."""
        self.owner = checkpoint_owner(cfgs)
        return self

    def due(self, epoch: int) -> bool:
        return self.policy.due(epoch, time.monotonic() - self.last_saved)

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"format": STATE_FORMAT, "owner": self.owner, **state}, buffer)
        if self.owner is not None and self.ignored != "":  # once per run (one PUT less per save on a store), and
            # before the state: this trial's state is never left beside another trial's owner record
            atomic_write_bytes(self.folder / OWNER_FILE, json.dumps(self.owner).encode())
        atomic_write_bytes(self.path, buffer.getvalue())
        self.last_saved = time.monotonic()
        self.ignored = ""  # the state here is this trial's own now

    def load(self) -> dict[str, Any] | None:
        """The saved state of this checkpoint's owner, or None when there is none. Read with
        `weights_only=True`: tensors and plain containers only, no code runs."""
        if self.ignored:
            return None
        try:
            source = io.BytesIO(self.path.read_bytes()) if isinstance(self.path, ObjectPath) else self.path
            state = torch.load(source, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated, foreign, or refused by the weights-only unpickler
            return self.refuse(f"unreadable or refused ({_first_line(exc)})")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            return self.refuse("not a checkpoint of this version")
        why = owner_mismatch(state.get("owner"), self.owner) if self.owner is not None else None
        return self.refuse(why) if why else state

    def refuse(self, why: str) -> None:
        """Count the state here as none from now on (until this trial saves its own), said once on stderr."""
        if not self.ignored:
            print(f"checkpoint {self.path}: {why}; ignored, the trial starts over", file=sys.stderr, flush=True)
        self.ignored = why

    def refuse_unfit(self, exc: BaseException) -> None:
        """The state names this checkpoint's owner but could not be restored into it."""
        self.refuse(f"it does not fit its trials ({_first_line(exc)})")

    def delete(self) -> None:
        delete_tree(self.folder)


def _first_line(exc: BaseException) -> str:
    """torch's refusal names the global it refused on a line of its own; other errors say it first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return next((line for line in lines if line.startswith("WeightsUnpickler")), lines[0])[:200]


def global_random_states() -> dict[str, Any]:
    """The process-wide random sources: Python, NumPy (timm's Mixup), torch CPU and CUDA."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _numpy_state(state: tuple) -> dict[str, Any]:
    """NumPy's legacy generator state as types `torch.load(weights_only=True)` reads (no NumPy arrays)."""
    kind, keys, pos, has_gauss, cached = state
    return {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_back(state: dict[str, Any]) -> tuple:
    return (state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
            state["cached_gaussian"])


def set_global_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(_numpy_state_back(states["numpy"]))
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


def capture(step: int, model, optimizer, scheduler, ema, generator: torch.Generator,
            objective_rng: np.random.Generator, progress: dict[str, Any]) -> dict[str, Any]:
    """A trial's state after `step` optimizer steps (the loop adds the epoch and its times);
    `progress`: the curve so far and the running totals the metrics are made of."""
    return {
        "step": step,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "random": random_states(generator, objective_rng), "progress": progress,
    }


def restore(state: dict[str, Any], model, optimizer, scheduler, ema, generator: torch.Generator,
            objective_rng: np.random.Generator) -> dict[str, Any]:
    """Load a captured state into freshly built objects; returns its step and progress."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    set_random_states(state["random"], generator, objective_rng)
    return {"step": state["step"], **state["progress"]}
