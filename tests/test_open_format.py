"""The study folder as an open format: every readable Parquet file with the key columns is data,
whatever its name, row count or writer (pandas, DuckDB, Polars, a compaction); only an unreadable
file, or one without the key columns, is damaged; a trial id in two files counts once (the newest
file wins); `python -m stability.results compact` rewrites a study as a few files, atomically."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stability.results.__main__ import main as results_main
from stability.results.compact import compact
from stability.results.lock import StudyLock
from stability.results.store import ResultsStore, read_study
from stability.results.tables import TRIAL_KEYS, check_file, table_files
from stability.spec import load_spec
from stability.sweep.__main__ import main as sweep_main
from conftest import TESTS
from test_report import make_study

TINY = str(TESTS / "data" / "tiny.yaml")
WRITERS = ["pandas-one-file", "pandas-in-folder", "duckdb-partitioned", "polars", "compacted"]


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _normal(frame: pd.DataFrame, columns: list[str], key: list[str]) -> pd.DataFrame:
    """A frame to compare by value: the given columns, sorted by key, categories and lists as plain values."""
    out = frame[columns].copy()
    for column in columns:
        if isinstance(out[column].dtype, pd.CategoricalDtype) or out[column].dtype == object:
            out[column] = [tuple(v) if hasattr(v, "__len__") and not isinstance(v, str) else v for v in out[column]]
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            out[column] = out[column].astype(str)
    for column in ("epoch", "epochs"):
        if column in out:
            out[column] = out[column].astype("int64")
    return out.sort_values(key).reset_index(drop=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A study as the sweep writes it (one file per trial) and its frames as pandas reads them."""
    root = make_study(tmp_path_factory.mktemp("src"), samples=4)
    return root, pd.read_parquet(root / "trials.parquet"), pd.read_parquet(root / "curves.parquet")


def _write(kind: str, source, dest: Path) -> None:
    """The source study's rows written into `dest` as another tool writes Parquet."""
    root, trials, curves = source
    if kind == "compacted":
        shutil.copytree(root, dest)
        compact(dest, rows_per_file=5, say=lambda line: None)
        return
    dest.mkdir(parents=True)
    shutil.copy(root / "study.yaml", dest / "study.yaml")
    if kind == "pandas-one-file":  # each table one multi-row file
        trials.to_parquet(dest / "trials.parquet", index=False)
        curves.to_parquet(dest / "curves.parquet", index=False)
    elif kind == "pandas-in-folder":  # one multi-row file per folder, any name
        for name, frame in (("trials", trials), ("curves", curves)):
            (dest / f"{name}.parquet").mkdir()
            frame.to_parquet(dest / f"{name}.parquet" / "part-0.parquet")
    elif kind == "duckdb-partitioned":  # key=value folders; the partition column is not in the files
        duckdb = pytest.importorskip("duckdb")
        con = duckdb.connect()
        for name, frame, by in (("trials", trials, "model"), ("curves", curves, "epoch")):
            con.register(name, frame)
            con.execute(f"COPY {name} TO '{dest / f'{name}.parquet'}' (FORMAT PARQUET, PARTITION_BY ({by}))")
    else:
        pl = pytest.importorskip("polars")
        for name in ("trials", "curves"):
            frame = pl.read_parquet(str(root / f"{name}.parquet" / "*.parquet"))
            (dest / f"{name}.parquet").mkdir()
            half = frame.height // 2
            frame[:half].write_parquet(dest / f"{name}.parquet" / "first.parquet")
            frame[half:].write_parquet(dest / f"{name}.parquet" / "second.parquet")


@pytest.mark.parametrize("kind", WRITERS)
def test_a_study_written_by_another_tool_reads_with_every_row_pandas_reads(source, tmp_path, kind, capsys):
    root, trials, curves = source
    dest = tmp_path / "study"
    _write(kind, source, dest)
    result = read_study(dest)
    assert result.skipped == [] and "damaged" not in capsys.readouterr().err
    for ours, theirs, original, key in ((result.trials, pd.read_parquet(dest / "trials.parquet"), trials, ["trial_id"]),
                                        (result.curves, pd.read_parquet(dest / "curves.parquet"), curves,
                                         ["trial_id", "epoch"])):
        columns = [c for c in original.columns if c not in ("point", "repeat")]  # recovered from seeds by ours
        assert len(ours) == len(theirs) == len(original)
        pd.testing.assert_frame_equal(_normal(ours, columns, key), _normal(theirs, columns, key), check_dtype=False)
        pd.testing.assert_frame_equal(_normal(ours, columns, key), _normal(original, columns, key), check_dtype=False)
    assert list(result.trials["epochs"].map(type).unique()) != [str], "partition values get the schema's types"
    store = ResultsStore(dest)
    assert store.finished_ids() == set(trials["trial_id"])
    assert not store.damaged_dir.exists(), "no sound file is moved aside"


def test_the_report_reads_a_study_whose_trials_are_one_multi_row_file(source, tmp_path, capsys):
    from stability.report.__main__ import main as report_main

    dest = tmp_path / "study"
    _write("pandas-in-folder", source, dest)
    assert report_main([str(dest), "--out", str(tmp_path / "r.html")]) in (0, None)
    assert "holds no results" not in capsys.readouterr().err and (tmp_path / "r.html").is_file()


def test_a_trial_in_two_files_counts_once_the_newest_wins_said_once(source, tmp_path, capsys):
    dest = tmp_path / "study"
    shutil.copytree(source[0], dest)
    victim = sorted((dest / "trials.parquet").glob("*.parquet"))[0]
    row = pq.read_table(victim)
    newer = row.set_column(row.schema.get_field_index("top1_err"), "top1_err", pa.array([1.5]))
    pq.write_table(newer, dest / "trials.parquet" / "zz-rerun.parquet")
    old = time.time() - 60
    os.utime(victim, (old, old))  # the copy under the other name is newer
    store = ResultsStore(dest)
    assert len(store.finished_ids()) == len(source[1])
    result = read_study(dest)
    assert len(result.trials) == len(source[1]) and result.trials["trial_id"].is_unique
    assert result.trials.set_index("trial_id").loc[victim.stem, "top1_err"] == 1.5
    read_study(dest)
    assert capsys.readouterr().err.count(f"{victim.stem} in ") == 1, "said once"


def test_compaction_writes_few_files_and_a_rerun_or_a_crash_half_way_reads_the_same(source, tmp_path, capsys):
    dest = tmp_path / "study"
    shutil.copytree(source[0], dest)
    before = read_study(dest)
    lines = []
    compact(dest, rows_per_file=6, say=lines.append)
    parts = sorted(p.name for p in (dest / "trials.parquet").iterdir())
    n = len(source[1])
    assert n == 17 and len(parts) == 3 and all(p.startswith("part-") for p in parts)  # at most 6 trials a file
    curve_parts = [pq.read_table(p) for p in sorted((dest / "curves.parquet").iterdir())]
    assert all(t.num_rows <= 10 for t in curve_parts) and sum(t.num_rows for t in curve_parts) == len(before.curves)
    ids = [set(t.column("trial_id").to_pylist()) for t in curve_parts]
    assert sum(map(len, ids)) == len(set().union(*ids)), "a trial's curve is never split"
    assert lines[0].startswith(f"{dest / 'trials.parquet'}: 17 file(s) -> 3, 17 rows")
    after = read_study(dest)
    for a, b, key in ((before.trials, after.trials, ["trial_id"]), (before.curves, after.curves, ["trial_id", "epoch"])):
        pd.testing.assert_frame_equal(_normal(a, list(a.columns), key), _normal(b, list(a.columns), key))
    compact(dest, rows_per_file=6, say=lines.append)  # a rerun: the same names, the same bytes of data
    assert sorted(p.name for p in (dest / "trials.parquet").iterdir()) == parts
    # a crash after the new files were written, before the old ones were deleted: both there
    for file in (source[0] / "trials.parquet").glob("*.parquet"):
        shutil.copy(file, dest / "trials.parquet" / file.name)
    os.utime(dest / "trials.parquet" / parts[0], (time.time() + 5, time.time() + 5))
    again = read_study(dest)
    assert len(again.trials) == n and again.trials["trial_id"].is_unique
    assert "in more than one file" in capsys.readouterr().err
    compact(dest, rows_per_file=6, say=lines.append)
    assert sorted(p.name for p in (dest / "trials.parquet").iterdir()) == parts


def test_a_truncated_part_of_a_compacted_study_is_moved_aside_and_its_trials_run_again(source, tmp_path, capsys):
    dest = tmp_path / "study"
    shutil.copytree(source[0], dest)
    compact(dest, rows_per_file=6, say=lambda line: None)
    part = sorted((dest / "trials.parquet").iterdir())[1]
    lost = set(pq.read_table(part).column("trial_id").to_pylist())
    part.write_bytes(part.read_bytes()[:200])
    store = ResultsStore(dest)
    assert store.finished_ids(set(source[1]["trial_id"])) == set(source[1]["trial_id"]) - lost
    assert (store.damaged_dir / "trials.parquet" / part.name).is_file() and not part.exists()
    assert f"{part} is damaged" in capsys.readouterr().err


def test_compact_cli_makes_a_single_file_table_a_folder_the_sweep_can_add_to(source, tmp_path, capsys):
    dest = tmp_path / "runs" / "tiny"
    spec = load_spec(TINY)
    ResultsStore(dest).write_spec(spec, {})
    source[1].head(3).assign(study="tiny").to_parquet(dest / "trials.parquet", index=False)
    with pytest.raises(SystemExit) as info:  # the sweep cannot add a file per trial to a file
        sweep_main([TINY, "--storage", str(tmp_path / "runs")])
    assert info.value.code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"{dest / 'trials.parquet'} is one Parquet file" in line and "python -m stability.results compact" in line
    assert results_main(["compact", str(dest)]) == 0
    assert (dest / "trials.parquet").is_dir() and len(read_study(dest).trials) == 3
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == [], "no staging folder or lock left"
    ResultsStore(dest).check_layout()


def test_compact_refuses_a_study_a_sweep_is_writing_and_a_folder_without_results(source, tmp_path, capsys):
    dest = tmp_path / "study"
    shutil.copytree(source[0], dest)
    with StudyLock(dest):
        with pytest.raises(SystemExit) as info:
            results_main(["compact", str(dest)])
        assert info.value.code == 2 and "is in use by another sweep" in _one_line_error(capsys.readouterr().err)
    assert len(list((dest / "trials.parquet").iterdir())) == len(source[1]), "nothing rewritten"
    with pytest.raises(SystemExit) as info:
        results_main(["compact", str(tmp_path / "nothing")])
    assert info.value.code == 2 and "holds no results" in _one_line_error(capsys.readouterr().err)


# --- damaged result files ------------------------------------------------------------------------------


def _row(trial_id: str, **extra) -> dict:
    return {"study": "s", "trial_id": trial_id, "model": "m", "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
            "epochs": 1, "seed": 0, "batch_size": 8, "status": "ok", "top1_err": 5.0, **extra}


CURVE = [{"epoch": 1, "train_loss": 1.0, "top1_err": 9.0, "lr": 0.1, "elapsed_s": 1.0}]


def _damaged_store(tmp_path) -> tuple[ResultsStore, dict[str, str]]:
    """A store with sound trials a0..a2, one damaged file of each kind, and two sound files that
    repeat rows of others (a copy under another name; one row twice in one file)."""
    store = ResultsStore(tmp_path / "s")
    for tid in ["a0", "a1", "a2", "trunc", "empty", "wrong", "curve"]:
        store.write_trial(_row(tid), CURVE)
    trials = store.trials_dir
    data = (trials / "trunc.parquet").read_bytes()
    (trials / "trunc.parquet").write_bytes(data[: len(data) // 2])  # a torn copy: no footer
    (trials / "empty.parquet").write_bytes(b"")
    shutil.copy(trials / "a0.parquet", trials / "wrong.parquet")  # sound Parquet, another trial's row: data
    curve = (store.curves_dir / "curve.parquet").read_bytes()
    (store.curves_dir / "curve.parquet").write_bytes(curve[:10])
    one = pq.read_table(trials / "a1.parquet")
    pq.write_table(pa.concat_tables([one, one]), trials / "two.parquet")  # one trial's row twice: data
    pq.write_table(one.drop_columns(["trial_id"]), trials / "nokey.parquet")  # Parquet without a key column
    return store, {"trunc": "trials", "empty": "trials", "nokey": "trials", "curve": "curves"}


def test_damaged_trial_files_are_moved_aside_said_on_stderr_and_run_again(tmp_path, capsys):
    store, damaged = _damaged_store(tmp_path)
    assert store.finished_ids() == {"a0", "a1", "a2"}
    err = capsys.readouterr().err
    for tid, table in damaged.items():
        kept = store.damaged_dir / f"{table}.parquet" / f"{tid}.parquet"
        assert kept.is_file(), f"{tid}: damaged files are kept for inspection"
        assert f"{store.root / f'{table}.parquet' / f'{tid}.parquet'} is damaged" in err
        assert not (store.root / f"{table}.parquet" / f"{tid}.parquet").exists()
    assert "no trial_id column" in err
    assert (store.trials_dir / "wrong.parquet").is_file() and (store.trials_dir / "two.parquet").is_file(), "sound files stay"
    assert err.count("in more than one file") == 1, "repeated rows are said once"
    assert "curve" not in store.finished_ids(), "a trial whose curve is damaged runs again"
    store.write_trial(_row("trunc"), CURVE)  # its re-run
    assert store.finished_ids() == {"a0", "a1", "a2", "trunc"}
    (store.trials_dir / "a2.parquet").write_bytes(b"PAR1")  # damaged again later: a second copy is kept too
    (store.damaged_dir / "trials.parquet" / "a2.parquet").write_bytes(b"older")
    assert "a2" not in store.finished_ids()
    assert (store.damaged_dir / "trials.parquet" / "a2.parquet.1").read_bytes() == b"PAR1"
    assert (store.damaged_dir / "trials.parquet" / "a2.parquet").read_bytes() == b"older"


def test_read_study_reads_the_sound_files_and_lists_the_others(tmp_path):
    store, damaged = _damaged_store(tmp_path)
    before = sorted(p.name for p in store.root.rglob("*"))
    result = read_study(store.root)
    assert sorted(result.trials["trial_id"]) == ["a0", "a1", "a2", "curve"]
    assert sorted(result.curves["trial_id"]) == ["a0", "a1", "a2", "empty", "trunc", "wrong"]
    assert sorted(Path(p).relative_to(store.root).as_posix() for p in result.skipped) == sorted(
        f"{table}.parquet/{tid}.parquet" for tid, table in damaged.items())
    assert sorted(p.name for p in store.root.rglob("*")) == before, "a reader moves nothing"
    sound = pd.read_parquet([store.trials_dir / f"a{i}.parquet" for i in range(3)])
    ours = result.trials[result.trials["trial_id"] != "curve"].sort_values("trial_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, sound)


def test_a_zero_byte_file_named_after_no_trial_says_so(tmp_path, capsys):
    store = ResultsStore(tmp_path / "s")
    store.write_trial(_row("t1"), CURVE)
    (store.trials_dir / "000000000000.parquet").write_bytes(b"")
    assert store.finished_ids({"t1", "t2"}) == {"t1"}
    line = capsys.readouterr().err.strip()
    assert "000000000000.parquet is damaged" in line and "its name is no trial of this study" in line
    assert "its trial runs again" not in line


def test_a_sound_study_reads_as_pandas_reads_it_and_checks_read_footers_only(tmp_path, monkeypatch):
    root = make_study(tmp_path, samples=3)
    result = read_study(root)
    assert result.skipped == []
    positions = ["point", "repeat"]  # recovered from the seeds when the rows lack them
    pd.testing.assert_frame_equal(result.trials.drop(columns=positions),
                                  pd.read_parquet(root / "trials.parquet").drop(columns=positions))
    pd.testing.assert_frame_equal(result.curves, pd.read_parquet(root / "curves.parquet"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("one-row files are checked by their footers"))
    assert all(check_file(f, TRIAL_KEYS)[1] is None for f in table_files(root / "trials.parquet"))
    assert len(ResultsStore(root).finished_ids()) == len(result.trials)


