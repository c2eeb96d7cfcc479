"""What a study folder keeps from earlier runs, checked before the sweep uses it.

A study folder lives on shared disks and buckets that many people and jobs write, so nothing in it
is trusted unchecked: saved fused groups (`groups.json`) are checked as new groups are, mid-trial
checkpoints must name the trials they are used for, and the plan of the saved `study.yaml` must
be the plan the stored results were made by. What does not hold is said once on stderr: a group or
checkpoint is dropped (its trials run anew), an edited spec is refused (exit 2).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable
from typing import Any

from stability.cli import UsageError
from stability.results.storage import StoragePath
from stability.spec.trial import TrialConfig


def saved_fused_groups(saved: Any, by_id: dict[str, TrialConfig], k: int) -> tuple[list[list[TrialConfig]], list[str]]:
    """The saved groups (lists of trial ids) that still hold: every member still to run, in one group
    only, at most `k` members, and fusable as a new group would be (`check_fusable_configs`). Returns
    those groups (their members taken out of `by_id`) and why each dropped group was dropped."""
    from stability.train.fused.rules import check_fusable_configs

    groups, dropped = [], []
    for ids in saved if isinstance(saved, list) else ():
        if not isinstance(ids, list) or len(ids) < 2 or not all(isinstance(i, str) for i in ids):
            continue
        if len(set(ids)) < len(ids) or len(ids) > k:
            dropped.append(f"{len(ids)} members where at most {k} distinct ones fit" if len(ids) > k
                           else "a trial listed twice")
            continue
        if not all(i in by_id for i in ids):  # a member finished, left the plan, or sits in an earlier group
            continue
        try:
            check_fusable_configs([by_id[i] for i in ids])
        except ValueError as exc:
            dropped.append(str(exc))
            continue
        groups.append([by_id.pop(i) for i in ids])
    return groups, dropped


def dropped_groups_line(dropped: list[str]) -> str:
    """One line for every saved group that did not hold."""
    return (f"groups.json: {len(dropped)} saved fused group(s) dropped ({dropped[0]}); their trials are grouped "
            f"anew and start over")


def check_checkpoints(checkpoints_dir: StoragePath, groups: list[list[TrialConfig]],
                      say: Callable[[str], None]) -> int:
    """Say, once per group, which checkpoints about to be used are not their group's: another
    trial's copy, another group's, or one with no owner record. The trial process refuses such a
    state by itself (`train.checkpoint.TrialCheckpoint.load`); this is what tells the user. Returns how
    many were found."""
    from stability.train.owner import OWNER_FILE, checkpoint_owner, owner_mismatch
    from stability.train.checkpoint import STATE_FILE

    present = _keys_with_state(checkpoints_dir, STATE_FILE)
    foreign = 0
    for cfgs in groups:
        if cfgs[0].trial_id not in present:
            continue
        folder = checkpoints_dir / cfgs[0].trial_id
        try:
            found = json.loads((folder / OWNER_FILE).read_bytes())
        except (OSError, ValueError):  # missing, unreadable, not JSON
            found = None
        why = owner_mismatch(found, checkpoint_owner(cfgs))
        if why:
            foreign += 1
            say(f"checkpoint {folder / STATE_FILE}: {why}; ignored, the trial starts over")
    return foreign


def _keys_with_state(checkpoints_dir: StoragePath, state_file: str) -> set[str]:
    """The checkpoint folders that hold a state file, found with one listing (one request on a store)."""
    import pyarrow.fs as pafs

    from stability.results.storage import ObjectPath

    if isinstance(checkpoints_dir, ObjectPath):
        infos = checkpoints_dir.fs.get_file_info(pafs.FileSelector(checkpoints_dir.path, allow_not_found=True,
                                                                   recursive=True))
        paths = [info.path.split("/") for info in infos if info.type == pafs.FileType.File]
        return {parts[-2] for parts in paths if len(parts) >= 2 and parts[-1] == state_file}
    try:
        return {path.parent.name for path in checkpoints_dir.glob(f"*/{state_file}") if path.is_file()}
    except OSError:
        return set()


def check_results_match_plan(done: set[str], plan: list[TrialConfig], rows: Callable[[], Any], spec_path,
                             spec_difference: str | None = None) -> None:
    """UsageError (one line naming the first difference) when results stored in the study folder
    (`done`: their trial ids) are not trials of the plan of its `study.yaml`: the spec was edited
    after they were written, and running it would mix two studies in one folder. `rows()`: the
    stored trials as a frame, read only when there is a difference to name; `spec_difference`: how
    the saved spec differs from the one given (`--resume` with STUDY), when it does."""
    planned = {cfg.trial_id for cfg in plan}
    strays = sorted(done - planned)
    if not strays:
        return
    frame = rows()
    frame = frame[frame["trial_id"].isin(strays)]
    records = frame.sort_values(["model", "optimizer", "point", "repeat", "epochs"]).to_dict("records")
    where = {(c.model, c.optimizer, c.epochs, c.point, c.repeat): c for c in plan}
    difference = "a trial id the plan does not have"
    if records:
        row = records[0]
        key = (row["model"], row["optimizer"], _int(row["epochs"]), _int(row["point"]), _int(row["repeat"]))
        cfg = where.get(key)
        difference = f"trial {row['model']} {row['optimizer']} point {key[3]} repeat {key[4]} epochs {key[2]}: " + (
            (first_field_difference(row, cfg) or "its config differs") if cfg is not None else "not in the plan")
    given = f" ({spec_difference})" if spec_difference else ""
    raise UsageError(f"{spec_path} does not match the results stored beside it: {len(strays)} of {len(done)} are "
                     f"not in its plan (first: {difference}); it was changed after they were written{given}: restore "
                     f"it, or run the edited study under another name (--set name=...)")


def first_field_difference(row: dict[str, Any], cfg: TrialConfig) -> str | None:
    """The first of a trial's values that differs between a stored row and the planned config."""
    planned = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": cfg.seed, **cfg.extras}
    for key, value in planned.items():
        if key in row and row[key] != value and not _both_nan(row[key], value):
            return f"{key} is {_shown(row[key])} in the results, {_shown(value)} in the plan"
    return None


def first_key_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first dotted key at which two resolved specs differ (None when they are equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{prefix}{key}"
            found = first_key_difference(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "(the whole spec)"


def _shown(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{float(value):.6g}"
    return repr(value)[:80]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _both_nan(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and a != a and b != b
