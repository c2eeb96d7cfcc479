"""Nothing in a study folder is trusted unchecked: checkpoints (issue 23, points 1 and 2).

A checkpoint names its trials and is used only by them; a copied, forged, damaged or pickled file
counts as none (one stderr line) and the trial ends exactly as an uninterrupted run."""

from __future__ import annotations

import io
import json
import pickle
import shutil

import pytest
import torch

from stability.train.checkpoint import STATE_FORMAT, CheckpointPolicy, TrialCheckpoint
from stability.train.engine import run_trial
from stability.train.owner import OWNER_FILE, checkpoint_owner
from tests.test_checkpoints import Interrupted, config, interrupt_after, same_outcome


def _interrupted_checkpoint(cfg, folder) -> None:
    """`folder` holds `cfg`'s checkpoint after epoch 2 (the run stopped in epoch 3)."""
    with pytest.raises(Interrupted):
        run_trial(cfg, device="cpu", checkpoint=TrialCheckpoint(folder, CheckpointPolicy(1)),
                  on_epoch=interrupt_after(3, []))


@pytest.mark.parametrize("other", ["same-model", "other-model"])
def test_a_checkpoint_copied_from_another_trial_is_ignored_and_the_trial_ends_as_uninterrupted(other, tmp_path, capfd):
    torch.set_num_threads(1)
    a = config()
    b = a.model_copy(update={"lr": 5e-3, "seed": 6, **({"model": "vit_p_tiny"} if other == "other-model" else {})})
    _interrupted_checkpoint(a, tmp_path / a.trial_id)
    shutil.copytree(tmp_path / a.trial_id, tmp_path / b.trial_id)  # checkpoints/<A>/ copied to checkpoints/<B>/
    capfd.readouterr()
    resumed = run_trial(b, device="cpu", checkpoint=TrialCheckpoint(tmp_path / b.trial_id, CheckpointPolicy(1)))
    err = capfd.readouterr().err
    assert err.count(f"it belongs to trial {a.trial_id}, not to trial {b.trial_id}; ignored, the trial starts over") == 1
    same_outcome(resumed, run_trial(b, device="cpu"))
    assert json.loads((tmp_path / b.trial_id / OWNER_FILE).read_text())["trial_ids"] == [b.trial_id]


def test_a_forged_owner_on_a_state_that_does_not_fit_starts_the_trial_over(tmp_path, capfd):
    """A state relabelled as B's (another model's weights): restoring it fails, the trial starts over."""
    torch.set_num_threads(1)
    a = config()
    b = a.model_copy(update={"model": "vit_p_tiny", "seed": 6})
    _interrupted_checkpoint(a, tmp_path / a.trial_id)
    state = torch.load(tmp_path / a.trial_id / "state.pt", weights_only=True)
    state["owner"] = checkpoint_owner([b])
    (tmp_path / b.trial_id).mkdir()
    torch.save(state, tmp_path / b.trial_id / "state.pt")
    capfd.readouterr()
    resumed = run_trial(b, device="cpu", checkpoint=TrialCheckpoint(tmp_path / b.trial_id, CheckpointPolicy(1)))
    assert capfd.readouterr().err.count("it does not fit its trials") == 1
    same_outcome(resumed, run_trial(b, device="cpu"))


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling it creates the marker file


@pytest.mark.parametrize("how", ["torch-save", "plain-pickle"])
def test_a_planted_pickle_runs_no_code_and_counts_as_no_checkpoint(how, tmp_path, capfd):
    marker = tmp_path / "code-ran"
    checkpoint = TrialCheckpoint(tmp_path / "t", CheckpointPolicy(1)).bind([config()])
    checkpoint.folder.mkdir()
    payload = {"format": STATE_FORMAT, "owner": checkpoint.owner, "epoch": 1, "x": _RunsCode(str(marker))}
    if how == "torch-save":
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        checkpoint.path.write_bytes(buffer.getvalue())
    else:
        checkpoint.path.write_bytes(pickle.dumps(payload))
    assert checkpoint.load() is None
    assert not marker.exists()
    assert checkpoint.load() is None  # said once
    err = capfd.readouterr().err
    assert err.count("unreadable or refused") == 1 and "ignored, the trial starts over" in err


def test_a_checkpoint_written_here_loads_with_weights_only(tmp_path):
    """Every part of a trial's state (random sources included) is tensors and plain containers."""
    torch.set_num_threads(1)
    cfg = config(ema=True, ema_decay=0.9, mixup=0.8, patch_losses={"cosine": 0.5}).model_copy(update={"epochs": 2})
    run_trial(cfg, device="cpu", checkpoint=TrialCheckpoint(tmp_path / "t", CheckpointPolicy(1)))
    state = torch.load(tmp_path / "t" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["owner"] == checkpoint_owner([cfg])


def test_a_state_of_an_older_checkpoint_format_counts_as_none(tmp_path, capfd):
    """A checkpoint a previous version wrote (format 2: no loop times beside the state) is not restored
    half-way: it counts as none, said once, and the trial starts over."""
    checkpoint = TrialCheckpoint(tmp_path / "t", CheckpointPolicy(1)).bind([config()])
    checkpoint.folder.mkdir()
    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT - 1, "owner": checkpoint.owner, "epoch": 1, "step": 3}, buffer)
    checkpoint.path.write_bytes(buffer.getvalue())
    assert checkpoint.load() is None and checkpoint.load() is None
    err = capfd.readouterr().err
    assert err.count("not a checkpoint of this version; ignored, the trial starts over") == 1
