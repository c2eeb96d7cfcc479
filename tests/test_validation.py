"""Hostile input, caught before it costs anything: every case exits 2 with one line `error: ...` that
names the key, no traceback, nothing written; refused at `--dry-run` where it is known without
training. Trial inputs (image size, model_args, batch size) per planned trial, from torch-free tables
(kept honest against timm and the loaders in test_catalog_tables.py); a full disk while a sweep writes; the train CLI's
device, checkpoint path and teacher; damaged report input; and a sweep without --address that never
joins a cluster left running on the machine."""

from __future__ import annotations

import errno
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TESTS, stop_cluster
from stability.sweep.__main__ import main as sweep_main

TINY = str(TESTS / "data" / "tiny.yaml")
ONE_TRIAL = """\
name: one
description: one short trial
dataset: {name: digits, img_size: 8}
models: [vit_p_tiny]
optimizers:
  adamw: {lr: 2.0e-3, weight_decay: 0.05}
sampler: random
samples: 1
epochs: 1
seed: 0
train: {batch_size: 64, warmup_epochs: 0.5}
resources: {workers_per_trial: 1, cpus_per_worker: 1, max_failures: 0}
"""


def one_error_line(err: str) -> str:
    """The single `error: ...` line of stderr (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# 1. Trial input a sweep checks per planned trial, --dry-run included

def spec_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return str(path)


SWEEP_CASES = [
    # (id, spec text (None: tests/data/tiny.yaml), --set assignments, fragment the message must hold)
    ("img-size-below-dataset-range", None, ["dataset.img_size=1"], "dataset.img_size: digits takes 8 to 64 px, got 1"),
    ("img-size-above-dataset-range", None, ["dataset.img_size=65"], "dataset.img_size"),
    ("img-size-not-divisible-by-patch", None, ["dataset.img_size=30"], "dataset.img_size: 30 px is not divisible"),
    ("paper-model-on-tiny-images", None, ["models=[vit_p_1gf]"], "vit_p_1gf's patch size 16"),
    ("unknown-model-arg", None, ["model_args.no_such_arg=1"], "model_args.no_such_arg: vit_p_tiny does not accept it"),
    ("model-arg-typo", None, ["model_args.init_value=0.1"], "did you mean 'init_values'"),
    ("model-arg-set-by-engine", None, ["model_args.img_size=8"], "model_args.img_size: set by the engine"),
    ("stem-stride-vs-patch", None, ["model_args.patch_size=8"], "model_args.patch_size: vit_c_tiny's conv stem"),
    ("patch-size-not-a-number", None, ["model_args.patch_size=big"], "model_args.patch_size: must be a positive integer"),
    ("sampled-patch-size", None, ["models=[vit_p_tiny]", "model_args.patch_size={choice: [4, 3]}"],
     "dataset.img_size: 8 px is not divisible by vit_p_tiny's patch size 3"),
    ("batch-larger-than-train-split", None, ["train.batch_size=5000"],
     "train.batch_size: 5000 exceeds the 1438 training images of digits"),
    ("batch-larger-than-synthetic-set", None,
     ["dataset={name: synthetic, img_size: 8, options: {train_size: 32}}"], "train.batch_size: 64 exceeds the 32"),
    ("unknown-dataset-option", None, ["dataset.options.shuffle=1"], "dataset.options: digits: unknown dataset option"),
    ("teacher-model-vs-image-size", None, ["train.distillation.type=soft", "train.distillation.teacher=deit_tiny"],
     "train.distillation.teacher deit_tiny: dataset.img_size: 8 px is not divisible"),
    ("per-model-model-args",
     ONE_TRIAL.replace("models: [vit_p_tiny]", "models: [{name: cait_xxs12_p4, model_args: {talking_heads: true}}]"),
     [], "model_args.talking_heads: cait_xxs12_p4 does not accept it"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("case_id, text, sets, fragment", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_trial_input_is_refused_before_anything_runs(case_id, text, sets, fragment, dry_run, tmp_path, capsys):
    storage = tmp_path / "runs"
    study = TINY if text is None else spec_file(tmp_path, text)
    argv = [study, "--storage", str(storage), *(["--dry-run"] if dry_run else [])]
    for assignment in sets:
        argv += ["--set", assignment]
    with pytest.raises(SystemExit) as info:
        sweep_main(argv)
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    assert fragment in one_error_line(captured.err), captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.out == ""
    assert not storage.exists(), "nothing may be written on invalid input"
    import ray

    assert not ray.is_initialized()


def test_batch_size_must_split_over_the_workers_of_a_trial(tmp_path, capsys):
    """Needs `check_factors(plan, spec.resources.workers_per_trial)` in the sweep's `sweep()`."""
    storage = tmp_path / "runs"
    with pytest.raises(SystemExit) as info:
        sweep_main([TINY, "--dry-run", "--storage", str(storage), "--set", "resources.workers_per_trial=3"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "train.batch_size: 64 is not divisible by resources.workers_per_trial=3" in one_error_line(err)
    assert not storage.exists()


def test_valid_inputs_still_pass(tmp_path, capsys):
    """What the tables allow is what the models and data take: knobs of the recipe, per-model and
    sampled model_args, a teacher that fits, the largest batch, a synthetic set made large enough."""
    storage = str(tmp_path / "runs")
    for sets in (["model_args.init_values={log_uniform: [1.0e-5, 1.0e-1]}", "model_args.drop_rate=0.1"],
                 ["train.distillation.type=hard", "train.distillation.teacher=vit_c_tiny"],
                 ["train.batch_size=1438"], ["dataset.img_size=64", "models=[deit_tiny, regnety_1gf]"],
                 ["dataset={name: synthetic, img_size: 16, options: {train_size: 64}}"]):
        argv = [TINY, "--dry-run", "--storage", storage]
        for assignment in sets:
            argv += ["--set", assignment]
        assert sweep_main(argv) == 0, sets
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trials"] > 0
    assert not os.path.exists(storage)


def test_the_checks_import_neither_torch_nor_timm(tmp_path):
    """The sweep driver checks every trial's input without torch (its import costs seconds)."""
    code = ("import sys\n"
            "from stability.sweep.__main__ import main\n"
            "base = [sys.argv[1], '--dry-run', '--storage', sys.argv[2]]\n"
            "for bad in ('model_args.no_such_arg=1', 'dataset.img_size=30', 'train.batch_size=5000'):\n"
            "    try:\n"
            "        main([*base, '--set', bad])\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code == 2, bad\n"
            "    else:\n"
            "        raise AssertionError(bad)\n"
            "assert main([*base, '--set', 'train.distillation.type=soft', '--set', 'train.distillation.teacher=vit_c_tiny',\n"
            "             '--set', 'model_args.init_values=0.1']) == 0\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code, TINY, str(tmp_path / "runs")], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------------------------------
# 2. A full disk while a sweep writes its results

def test_storage_errors_turn_a_refused_write_into_one_line():
    """Ray Tune re-raises a callback's error as a TuneError whose context is the OSError; pyarrow's
    OSErrors carry their errno in the text only."""
    from ray.tune.error import TuneError

    from stability.cli import UsageError
    from stability.sweep.errors import storage_errors

    argv = ["default", "--storage", "/data/runs"]
    with pytest.raises(UsageError) as info:
        with storage_errors(argv):
            try:
                raise OSError(errno.ENOSPC, "No space left on device", "/data/runs/default/trials.parquet/x.parquet")
            except OSError:
                raise TuneError("Traceback (most recent call last): ...")
    message = str(info.value)
    assert message.startswith("--storage: cannot write /data/runs/default/trials.parquet/x.parquet: No space left")
    assert "python -m stability.sweep default --storage /data/runs --resume" in message and "\n" not in message
    with pytest.raises(UsageError, match="cannot write /data/runs: No space left on device"):
        with storage_errors(argv):
            raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")
    with pytest.raises(ValueError, match="a bug"):  # anything else is not the storage's
        with storage_errors(argv):
            raise ValueError("a bug")
    with pytest.raises(FileNotFoundError):
        with storage_errors(argv):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")


FULL_DISK = """\
import errno, sys
from stability.results.store import ResultsStore

def full(self, row, curve):
    raise OSError(errno.ENOSPC, "No space left on device", str(self.trials_dir / f"{row['trial_id']}.parquet"))

ResultsStore.write_trial = full
from stability.sweep.__main__ import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.ray
def test_a_full_disk_ends_the_sweep_with_one_line_naming_the_path(tmp_path):
    """A trial's row cannot be written (ENOSPC inside Ray Tune's callback): exit 2, one line naming
    the file, how to resume; no traceback. Needs `storage_errors` around `sweep(argv)` in main()."""
    study, storage = spec_file(tmp_path, ONE_TRIAL), tmp_path / "runs"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # this sweep's own Ray instance, stopped below
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run([sys.executable, "-c", FULL_DISK, study, "--storage", str(storage), "--num-cpus", "1"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 2, out.stderr
    line = one_error_line(out.stderr)
    assert f"cannot write {storage / 'one' / 'trials.parquet'}" in line and "No space left on device" in line, line
    assert "--resume" in line


# ---------------------------------------------------------------------------------------------------
# 3. python -m stability.train

def train_main(*args: str):
    from stability.train.__main__ import main

    base = ["--model", "vit_p_tiny", "--optimizer", "adamw", "--lr", "2e-3", "--weight-decay", "0.05", "--epochs", "1",
            "--img-size", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
    return main([*base, *args])


def make_teacher(path: Path, **changes) -> None:
    import torch

    torch.save({"format": 1, "model": "vit_p_tiny", "model_args": {}, "num_classes": 10, "img_size": 8, "in_chans": 1,
                "top1_err": 50.0, "trial_id": "t", "state_dict": {}, **changes}, path)


@pytest.mark.parametrize("case_id, args, fragment", [
    ("unknown-device", ["--device", "foo"], "device 'foo' is not a device; use cpu, cuda, cuda:N or auto"),
    ("not-a-trial-device", ["--device", "meta"], "device 'meta'"),
    ("checkpoint-under-a-file", ["--save-checkpoint", "{tmp}/file/t.pt"], "--save-checkpoint: cannot write"),
    ("checkpoint-is-a-folder", ["--save-checkpoint", "{tmp}"], "is a folder"),
    ("img-size-out-of-range", ["--img-size", "1"], "dataset.img_size: digits takes 8 to 64 px"),
    ("img-size-vs-patch", ["--img-size", "30"], "dataset.img_size: 30 px is not divisible"),
    ("unknown-model-arg", ["--set", "model_args.no_such_arg=1"], "model_args.no_such_arg"),
    ("batch-larger-than-train-split", ["--batch-size", "5000"], "train.batch_size: 5000 exceeds"),
    ("teacher-model-args", ["teacher", {"model_args": {"no_such_arg": 1}}],
     "teacher checkpoint {tmp}/t.pt: model_args.no_such_arg: vit_p_tiny does not accept it"),
    ("teacher-unknown-model", ["teacher", {"model": "vit_q"}], "unknown model 'vit_q'"),
    ("teacher-other-data", ["teacher", {"img_size": 16}], "trained with img_size=16, the student's data has img_size=8"),
    ("teacher-no-weights", ["teacher", {"state_dict": None}], "holds no weights"),
])
def test_train_cli_refuses_bad_input_before_training(case_id, args, fragment, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    if args and args[0] == "teacher":
        make_teacher(tmp_path / "t.pt", **args[1])
        args = ["--set", "train.distillation.type=soft", "--set", f"train.distillation.teacher={tmp_path / 't.pt'}"]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as info:
        train_main(*args)
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    assert fragment.replace("{tmp}", str(tmp_path)) in one_error_line(captured.err), captured.err
    assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["file", *(["t.pt"] if "teacher" in case_id else [])])


def test_train_cli_checkpoint_that_cannot_be_written_after_training_is_one_line(tmp_path, monkeypatch, capsys):
    """The disk fills up while the trained model is saved: one line naming the path, no traceback."""
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(path).parent / ".tmp-123"))

    monkeypatch.setattr("stability.train.teacher.atomic_write_bytes", full)
    target = tmp_path / "t.pt"
    with pytest.raises(SystemExit) as info:
        train_main("--save-checkpoint", str(target))
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert one_error_line(err) == f"error: --save-checkpoint: cannot write {target}: No space left on device"
    assert not target.exists()


# ---------------------------------------------------------------------------------------------------
# 4. Report input

def damaged_study(root: Path, change) -> Path:
    from test_report import make_study

    folder = make_study(root, samples=3, failed=False)
    for i, path in enumerate(sorted(glob.glob(str(folder / "trials.parquet" / "*.parquet")))):
        frame = pd.read_parquet(path)
        change(frame, i)
        frame.to_parquet(path)
    return folder


def _set(column, value, rows=None):
    def change(frame, i):
        if rows is None or i in rows:
            frame[column] = value(frame, i) if callable(value) else value
    return change


@pytest.mark.parametrize("case_id, change, fragment", [
    ("text-lr", _set("lr", lambda f, i: f["lr"].astype(str)), "trials column 'lr' holds text, expected numbers"),
    ("null-status", _set("status", None, rows={0, 1}), "trials column 'status' has 2 empty value(s)"),
    ("unknown-status", _set("status", "crashed", rows={2}), "trials column 'status' has value 'crashed'"),
    ("null-model", _set("model", None, rows={1}), "trials column 'model' has 1 empty value(s)"),
    ("bytes-top1-err", _set("top1_err", b"\x00"), "trials column 'top1_err' holds bytes values, expected numbers"),
])
def test_report_refuses_results_of_the_wrong_type_in_one_line(case_id, change, fragment, tmp_path, capsys):
    from stability.report.__main__ import main

    folder = damaged_study(tmp_path, change)
    out = tmp_path / "report.html"
    with pytest.raises(SystemExit) as info:
        main([str(folder), "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    line = one_error_line(captured.err)
    assert line.startswith(f"error: {folder}: ") and fragment in line, line
    assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize("column, values, expected", [
    ("blob", lambda i: bytes([i % 2, 255]), ["00ff", "01ff"]),
    ("started", lambda i: pd.Timestamp("2024-01-02T03:04:05Z") + pd.Timedelta(hours=i % 2),
     ["2024-01-02T03:04:05+00:00", "2024-01-02T04:04:05+00:00"]),
])
def test_report_json_serialises_bytes_and_timestamps(column, values, expected, tmp_path, capsys):
    from stability.report.__main__ import main

    folder = damaged_study(tmp_path, lambda frame, i: frame.__setitem__(column, [values(i)]))
    for extra in ([], ["--split-by", column]):
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            assert main([str(folder), "--json", "--out", str(tmp_path / "r.html"), *extra]) == 0
        data = json.loads(stdout.getvalue())
        if extra:
            assert sorted({g[column] for g in data["groups"]}) == expected
        else:
            assert [f["levels"] for f in data["factors"] if f["column"] == column] == [expected]
    assert "Traceback" not in capsys.readouterr().err


def test_report_says_which_damaged_files_it_skipped(tmp_path, monkeypatch, capsys):
    """The results layer lists damaged files it left out (`StudyResults.skipped`): the report names
    them on stderr and in the page."""
    import stability.results.store as store
    from stability.report.__main__ import main
    from test_report import make_study

    folder = make_study(tmp_path, samples=3, failed=False)
    damaged = folder / "trials.parquet" / "damaged.parquet"
    read_study = store.read_study

    def read_with_skipped(path):
        res = read_study(path)
        res.skipped = [damaged]
        return res

    monkeypatch.setattr(store, "read_study", read_with_skipped)
    out = tmp_path / "report.html"
    assert main([str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {folder}: skipped 1 damaged file(s): {damaged}" in err.splitlines()
    assert str(damaged) in out.read_text()


# ---------------------------------------------------------------------------------------------------
# 5. Without --address a sweep starts its own Ray instance

def _driver_logs(ray_tmp: str) -> dict[str, set[str]]:
    """Per Ray session under ray_tmp, the log files of the drivers that connected to it."""
    return {session: {Path(p).name for p in glob.glob(f"{session}/logs/python-core-driver-*")}
            for session in glob.glob(f"{ray_tmp}/ray/session_2*")}


@pytest.mark.ray
def test_a_sweep_without_address_never_joins_a_running_cluster(ray_cluster, tmp_path):
    """A cluster started with `ray start` for the same RAY_TMPDIR (and named by RAY_ADDRESS) is left
    alone: no driver of the sweep connects to it; the sweep runs its trial on a private instance."""
    before = _driver_logs(ray_cluster["tmpdir"])
    assert before, "the cluster's session folder"
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"]}
    storage = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "stability.sweep", spec_file(tmp_path, ONE_TRIAL), "--storage",
                          str(storage)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert len(pd.read_parquet(storage / "one" / "trials.parquet")) == 1
    after = _driver_logs(ray_cluster["tmpdir"])
    for session, drivers in before.items():
        assert after[session] == drivers, f"the sweep connected to the running cluster ({session})"
    own = [after[s] for s in after if s not in before]
    assert len(own) == 1 and own[0], "the sweep's own Ray session"
