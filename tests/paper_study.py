"""A synthetic study the size of the paper's lr/wd study (9 models x 2 optimizers x 64 points,
1152 trials), written with the real results store; shared by the facet tests and usable by hand:
`python tests/paper_study.py runs/` writes runs/paper_synthetic/."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from stability.results.store import ResultsStore
from stability.spec import parse_spec

SIZES = {"1gf": 1.0, "4gf": 4.0, "18gf": 18.0}
MODELS = [f"vit_{stem}_{size}" for stem in ("p", "c") for size in SIZES] + ["regnety_1gf", "regnety_4gf", "regnety_16gf"]
RANGES = {"adamw": ((2.5e-4, 8.0e-3), (0.02, 0.8)), "sgd": ((0.1, 3.2), (4.0e-6, 1.2e-4))}
EPOCHS = 10
SPEC = {
    "name": "paper_synthetic", "description": "paper-sized synthetic lr/wd study",
    "dataset": {"name": "digits", "img_size": 16}, "models": MODELS,
    "optimizers": {o: {"lr": {"log_uniform": list(lr)}, "weight_decay": {"log_uniform": list(wd)}}
                   for o, (lr, wd) in RANGES.items()},
    "sampler": "random", "samples": 64, "epochs": EPOCHS, "repeats": 1, "seed": 0,
    "train": {"batch_size": 128, "warmup_epochs": 1},
}
# lr (as a share u of the log range) above which a model diverges: ViT_P first, RegNetY last
DIVERGE_AT = {"vit_p": 0.7, "vit_c": 0.85, "regnety": 2.0}


def family(model: str) -> str:
    return model.rsplit("_", 1)[0]


def diverge_lr(model: str, optimizer: str) -> float | None:
    """The lr above which `model` diverges under `optimizer` (None: never)."""
    (lo, hi), _ = RANGES[optimizer]
    u = DIVERGE_AT[family(model)] - (0.1 if optimizer == "sgd" else 0.0)
    return math.exp(math.log(lo) + u * math.log(hi / lo)) if u < 1 else None


def make_paper_study(root: Path, name: str = "paper_synthetic", seed: int = 0) -> Path:
    """Every model sees the same 64 points per optimizer; error falls with size, ViT_C is less
    sensitive to lr and wd than ViT_P, RegNetY least; trials above `diverge_lr` diverge (chance
    error 90 on 10 classes). Each trial gets a short curve."""
    rng = np.random.default_rng(seed)
    store = ResultsStore(root / name, {"warmup_epochs": pa.float64()})
    store.write_spec(parse_spec(yaml.safe_dump({**SPEC, "name": name}), name), {"stability": "0.1.0"})
    points = {o: rng.uniform(size=(SPEC["samples"], 2)) for o in RANGES}
    sensitivity = {"vit_p": 9.0, "vit_c": 4.0, "regnety": 3.0}
    for model in MODELS:
        size = float(model.rsplit("_", 1)[1].removesuffix("gf"))
        for opt, ((lr_lo, lr_hi), (wd_lo, wd_hi)) in RANGES.items():
            limit = diverge_lr(model, opt)
            for i, (u, v) in enumerate(points[opt]):
                lr = math.exp(math.log(lr_lo) + u * math.log(lr_hi / lr_lo))
                wd = math.exp(math.log(wd_lo) + v * math.log(wd_hi / wd_lo))
                base = 30.0 - 4.0 * math.log2(size) / 2 + (2.0 if opt == "sgd" else 0.0)
                err = base + sensitivity[family(model)] * (4 * (u - 0.5) ** 2 + (v - 0.5) ** 2) * 3 + rng.normal(0, 0.5)
                status = "diverged" if limit is not None and lr > limit else "ok"
                if status == "diverged":
                    err = 90.0
                curve = [{"epoch": e, "train_loss": 2.3 * math.exp(-e / 3) + err / 100, "lr": lr, "elapsed_s": 10.0 * e,
                          "top1_err": err + 50 * math.exp(-e / 2)} for e in range(1, EPOCHS + 1, 3)]
                store.write_trial({
                    "study": name, "trial_id": f"{model}-{opt}-{i}", "model": model, "optimizer": opt, "lr": lr,
                    "weight_decay": wd, "epochs": EPOCHS, "seed": i, "point": i, "repeat": 0, "batch_size": 128,
                    "status": status, "top1_err": err, "best_top1_err": err, "train_loss": curve[-1]["train_loss"],
                    "wall_time_s": 100.0, "images_per_s": 900.0, "params": int(5e6 * size), "gflops": size,
                    "patch_cos_sim": 0.3, "error": "", "warmup_epochs": 1.0}, curve)
    return root / name


if __name__ == "__main__":
    print(make_paper_study(Path(sys.argv[1] if len(sys.argv) > 1 else "runs")))
