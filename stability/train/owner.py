"""Whose a mid-trial checkpoint is, decided without torch (the sweep driver reads it too).

A checkpoint names the trials it holds, in order (one trial, or every member of a fused group), and
a hash of their full resolved configs. A checkpoint is used only by exactly that trial or group: one
copied from another trial, left by another group, or written by another version's config is
ignored and the trial starts over (`state.TrialCheckpoint.load`, `sweep.saved.check_checkpoints`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stability.spec.trial import TrialConfig

OWNER_FILE = "owner.json"  # beside state.pt: what the driver reads without loading the state


def checkpoint_owner(cfgs: list[TrialConfig]) -> dict[str, Any]:
    """The trial ids of `cfgs` in order (a fused group's membership) and a hash of their full configs."""
    blob = json.dumps([cfg.model_dump(mode="json") for cfg in cfgs], sort_keys=True, default=str)
    return {"trial_ids": [cfg.trial_id for cfg in cfgs], "config_sha256": hashlib.sha256(blob.encode()).hexdigest()}


def owner_mismatch(found: Any, expected: dict[str, Any]) -> str | None:
    """Why a checkpoint whose owner record is `found` is not the one of `expected`, or None when it is."""
    if not isinstance(found, dict) or not isinstance(found.get("trial_ids"), list):
        return "it names no owner"
    ids = [str(i)[:40] for i in found["trial_ids"][:8]]
    if found["trial_ids"] != expected["trial_ids"]:
        whose = "trial" if len(ids) == 1 else "fused group"
        want = "trial" if len(expected["trial_ids"]) == 1 else "fused group"
        return f"it belongs to {whose} {', '.join(ids)}, not to {want} {', '.join(expected['trial_ids'])}"
    if found.get("config_sha256") != expected["config_sha256"]:
        return "it was written for another config of this trial"
    return None
