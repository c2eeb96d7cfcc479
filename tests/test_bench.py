"""`python -m benchmarks` on the CPU with tiny settings, and the synthetic dataset through the engine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from benchmarks import runner
from benchmarks.__main__ import main as bench_main
from stability.data import DatasetError, check_dataset, list_datasets, load_dataset
from stability.spec.trial import TrialConfig
from stability.train.engine import run_trial

TINY = ["--device", "cpu", "--models", "vit_p_tiny", "--img-size", "16", "--batch-size", "8", "--steps", "2",
        "--epochs", "1", "--warmup-steps", "1", "--workers", "0", "--matmul-size", "128"]

# Runs the CLI with Ray, Optuna, Plotly and the analysis layer made unimportable, as on a GPU box that has only
# torch and timm (and the wheels the GPU check carries).
WITHOUT_RAY = [sys.executable, "-m", "benchmarks.without", "ray,optuna,plotly,analysis", "benchmarks"]


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_gpu_command_on_cpu_without_ray(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([*WITHOUT_RAY, "gpu", *TINY, "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "engine img/s" in proc.stdout and "plain img/s" in proc.stdout
    record = json.loads(out.read_text())
    (row,) = record["results"]
    assert (row["model"], row["img_size"], row["batch_size"], row["errors"]) == ("vit_p_tiny", 16, 8, {})
    for key in ("params", "gflops", "engine_images_per_s", "plain_images_per_s", "engine_mfu", "plain_mfu", "ratio",
                "engine_reported_images_per_s"):
        assert positive_finite(row[key]), (key, row[key])
    assert row["ratio"] == pytest.approx(row["engine_images_per_s"] / row["plain_images_per_s"])
    assert row["engine_mfu"] == pytest.approx(row["engine_images_per_s"] * 6 * row["gflops"] * 1e9
                                              / (record["peak"]["tflops"] * 1e12))
    assert positive_finite(record["peak"]["tflops"]) and record["peak"]["dtype"] == "float32"
    table_row = next(line for line in proc.stdout.splitlines() if "vit_p_tiny" in line and "%" in line)
    assert f"{row['ratio']:.2f}x" in table_row
    assert "CPU run" in proc.stdout  # CPU figures are labelled as a smoke test


@pytest.mark.parametrize("args, message", [
    (["gpu", "--models", "no_such_model"], "unknown model(s) no_such_model"),
    (["gpu", "--models", "vit_p_tiny", "--img-size", "30"], "not divisible by the patch size"),
    (["gpu", "--device", "tpu"], "--device must be cpu, cuda or auto"),
    (["gpu", "--steps", "0"], "--steps: must be a positive integer"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_cli_imports_neither_torch_nor_ray():
    code = ("import sys, benchmarks, benchmarks.__main__, benchmarks.runner, benchmarks.table; "
            "print([m for m in ('torch', 'ray', 'timm') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(runner.SCRIPTS))
def test_each_benchmark_runs_by_module_name(name, tmp_path):
    """`python -m benchmarks NAME --help` reaches the benchmark's own options, from any directory."""
    module, needs = runner.SCRIPTS[name]
    for package in needs:
        pytest.importorskip(package)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", name, "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"usage: python -m {module}" in proc.stdout


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """`overhead` runs a stand-in module that prints its arguments and a ratio; `fused` needs a package that
    is not installed and `orchestration`, `fused_sweep`, `cifar_projection`, `compaction` and `input` name modules that are not there
    (nothing starts Ray or trains)."""
    (tmp_path / "overhead_stand_in.py").write_text("import sys\nprint('args', sys.argv[1:])\nprint('ratio a / b: 0.50')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setitem(runner.SCRIPTS, "overhead", ("overhead_stand_in", ()))
    monkeypatch.setitem(runner.SCRIPTS, "fused", ("benchmarks.fused_trials", ("no_such_package",)))
    monkeypatch.setitem(runner.SCRIPTS, "orchestration", ("benchmarks.no_such_module", ()))
    monkeypatch.setitem(runner.SCRIPTS, "fused_sweep", ("no_such_package.fused_sweep", ()))
    monkeypatch.setitem(runner.SCRIPTS, "cifar_projection", ("benchmarks.no_such_projection", ()))
    monkeypatch.setitem(runner.SCRIPTS, "compaction", ("benchmarks.no_such_compaction", ()))
    monkeypatch.setitem(runner.SCRIPTS, "input", ("benchmarks.no_such_input_pipeline", ()))
    return tmp_path


def test_script_commands_pass_arguments_and_report_missing_modules(stand_ins, capsys):
    assert bench_main(["overhead", "--trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "args ['--trials', '4']" in out and "ratio a / b: 0.50" in out
    for name, message in [("fused", "fused: needs no_such_package, not installed here"),
                          ("orchestration", "orchestration: module benchmarks.no_such_module is not installed here"),
                          ("fused_sweep", "module no_such_package.fused_sweep is not installed here")]:
        with pytest.raises(SystemExit) as exc:
            bench_main([name])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_all_runs_each_benchmark_and_tabulates_ratios(stand_ins, capsys):
    assert bench_main(["all", *TINY]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("Benchmarks: ratios"):]
    assert "gpu engine/plain images/s, vit_p_tiny" in summary
    assert "ratio a / b: 0.50" in summary
    assert "skipped: fused" in summary and "skipped: orchestration" in summary and "skipped: fused_sweep" in summary
    assert "skipped: cifar_projection" in summary and "skipped: compaction" in summary and "skipped: input" in summary


def test_synthetic_dataset_on_the_device():
    assert "synthetic" in list_datasets()
    check_dataset("synthetic")
    opts = dict(train_size=40, val_size=12, num_classes=5, seed=3)
    ds = load_dataset("synthetic", img_size=16, device="cpu", **opts)
    assert (ds.name, ds.num_classes, ds.in_chans, ds.img_size, ds.train_size, ds.val_size) == ("synthetic", 5, 3, 16, 40, 12)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.max() < 5
    again = load_dataset("synthetic", img_size=16, device="cpu", **opts)
    other = load_dataset("synthetic", img_size=16, device="cpu", **{**opts, "seed": 4})
    assert torch.equal(ds.train_x, again.train_x) and not torch.equal(ds.train_x, other.train_x)
    batches = list(ds.train_batches(8, torch.Generator().manual_seed(0)))
    assert len(batches) == ds.steps_per_epoch(8) == 5
    x, y = batches[0]
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    floats = load_dataset("synthetic", img_size=8, device="cpu", dtype="float32", in_chans=1, train_size=4, val_size=2)
    assert floats.train_x.dtype == torch.float32 and floats.in_chans == 1


@pytest.mark.parametrize("options, message", [
    ({"colour": True}, "unknown dataset option(s) colour"),
    ({"dtype": "int16"}, "dtype must be one of uint8, float32"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"train_size": 0}, "train_size must be an integer >= 1"),
])
def test_synthetic_bad_options(options, message):
    with pytest.raises(DatasetError, match="synthetic") as exc:
        load_dataset("synthetic", img_size=16, device="cpu", **options)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_synthetic_dataset_through_run_trial():
    cfg = TrialConfig(model="vit_p_tiny", optimizer="adamw", lr=1e-3, weight_decay=0.05, epochs=2,
                      dataset={"name": "synthetic", "img_size": 16,
                               "options": {"train_size": 32, "val_size": 16, "num_classes": 4}},
                      train={"batch_size": 8, "eval_batch_size": 16})
    points = []
    metrics = run_trial(cfg, device="cpu", on_epoch=points.append)
    assert metrics["status"] == "ok" and metrics["epochs_run"] == 2 and len(points) == 2
    assert positive_finite(metrics["images_per_s"]) and positive_finite(metrics["train_loss"])
    assert 0 <= metrics["top1_err"] <= 100 and math.isfinite(metrics["patch_cos_sim"])
