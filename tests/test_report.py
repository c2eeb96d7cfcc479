"""The report CLI: JSON summary, offline HTML, escaping, bad input, static export, and a real
headless browser rendering the page (Debian's chromium)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from stability.report import main
from stability.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
RANGES = {"adamw": ((2.5e-4, 8.0e-3), (0.02, 0.8)), "sgd": ((0.01, 0.32), (4.0e-6, 1.2e-4))}
SPEC = {
    "name": "synthetic", "description": "ViT_P vs ViT_C on digits, synthetic results", "dataset": {"name": "digits", "img_size": 16},
    "models": ["vit_p_tiny", "vit_c_tiny"],
    "optimizers": {o: {"lr": {"log_uniform": list(lr)}, "weight_decay": {"log_uniform": list(wd)}} for o, (lr, wd) in RANGES.items()},
    "sampler": "sobol", "samples": 8, "epochs": 10, "repeats": 1, "seed": 0,
    "train": {"batch_size": 128, "warmup_epochs": 1, "label_smoothing": 0.1},
}


def make_study(root: Path, *, name: str = "synthetic", models=("vit_p_tiny", "vit_c_tiny"), samples: int = 8,
               epochs=(10,), failed: bool = True, seed: int = 0) -> Path:
    """A realistic small study folder written with the real store: every model sees the same
    log-uniform (lr, wd) points, ViT_C is more stable than ViT_P, one SGD trial of ViT_P
    diverges (chance error 90 on 10 classes), optionally one trial fails."""
    rng = np.random.default_rng(seed)
    store = ResultsStore(root / name, {"warmup_epochs": pa.float64(), "label_smoothing": pa.float64()})
    store.write_spec({"schema_version": 1, "spec": {**SPEC, "name": name, "models": list(models),
                                                   "epochs": list(epochs) if len(epochs) > 1 else epochs[0]},
                      "versions": {"stability": "0.1.0"}})
    points = {o: rng.uniform(size=(samples, 2)) for o in RANGES}
    for m, model in enumerate(models):
        sensitivity = 6.0 if "vit_p" in model else 2.5
        for opt, ((lr_lo, lr_hi), (wd_lo, wd_hi)) in RANGES.items():
            for i, (u, v) in enumerate(points[opt]):
                for ep in epochs:
                    lr = math.exp(math.log(lr_lo) + u * math.log(lr_hi / lr_lo))
                    wd = math.exp(math.log(wd_lo) + v * math.log(wd_hi / wd_lo))
                    base = 8.0 + 2.0 * m + (3.0 if opt == "sgd" and "vit_p" in model else 0.0) + 20.0 / ep
                    err = base + sensitivity * (4 * (u - 0.55) ** 2 + (v - 0.5) ** 2) * 4 + rng.normal(0, 0.4)
                    status = "ok"
                    if opt == "sgd" and model == models[0] and i == samples - 1:
                        status, err = "diverged", 90.0
                    tid = f"{model}-{opt}-{i}-{ep}"
                    curve = [{"epoch": e, "train_loss": (2.3 * math.exp(-e / 3) + err / 100) if status == "ok" else
                              (math.nan if e > 3 else 2.3), "top1_err": err + 60 * math.exp(-e / 2), "lr": lr,
                              "elapsed_s": 0.5 * e} for e in range(1, ep + 1)]
                    store.write_trial({
                        "study": name, "trial_id": tid, "model": model, "optimizer": opt, "lr": lr, "weight_decay": wd,
                        "epochs": ep, "seed": i, "batch_size": 128, "status": status, "top1_err": err,
                        "best_top1_err": err, "train_loss": curve[-1]["train_loss"], "wall_time_s": 5.0,
                        "images_per_s": 900.0, "params": 500_000, "gflops": 0.01 * (m + 1), "patch_cos_sim": 0.3,
                        "error": "", "warmup_epochs": 1.0, "label_smoothing": 0.1}, curve)
    if failed:
        store.write_trial({"study": name, "trial_id": "failed-0", "model": models[-1], "optimizer": "adamw", "lr": 1e-3,
                           "weight_decay": 0.1, "epochs": epochs[0], "seed": 0, "batch_size": 128, "status": "failed",
                           "top1_err": None, "error": "RuntimeError: CUDA out of memory <oom & co>"}, [])
    return root / name


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("runs"))


def run(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stability.report", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
