"""Regenerate tests/data/golden_plan_ids.json (only on purpose: trial ids must never change).

    python tests/make_golden_ids.py
"""

from __future__ import annotations

import json
from pathlib import Path

from stability.sampling import plan_trials
from stability.spec import builtin_names, load_spec

# (study, --set overrides): every built-in study, plus overrides that reach optimizer arguments,
# nested recipe sections and model arguments
# The default study ran 1 seed per point for 15 epochs until it shipped with repeats: 2 and 10
# epochs; its earlier plan is kept as "default repeats=1 epochs=15", and the other default cases
# pin epochs=15, so their ids are exactly those recorded before (the plain "default" case has new ids).
CASES = [(name, []) for name in builtin_names()] + [
    ("default", ["repeats=1", "epochs=15"]),
    ("default", ["optimizers.sgd.momentum=0.8", "optimizers.sgd.nesterov=false", "optimizers.adamw.betas=[0.9,0.99]",
                 "repeats=1", "epochs=15"]),
    ("default", ["train.mixup=0.8", "train.ema=true", "model_args.drop_rate={choice: [0.0, 0.1]}", "repeats=2",
                 "epochs=15"]),
    ("default", ["epochs=[5,10]", "sampler=random", "seed=3", "train.patch_losses.cosine={uniform: [0.0, 1.0]}",
                 "repeats=1"]),
    # data_order (added 2026-12-07) leaves every plan above as it was (default: trial); `repeat` gives the
    # trials a data_seed, which enters their ids: this case pins those ids (a case added, none changed)
    ("default", ["data_order=repeat"]),
]
OUT = Path(__file__).resolve().parent / "data" / "golden_plan_ids.json"


def case_key(study: str, overrides: list[str]) -> str:
    return " ".join([study, *overrides])


def plan_ids(study: str, overrides: list[str]) -> list[str]:
    return [cfg.trial_id for cfg in plan_trials(load_spec(study, overrides))]


if __name__ == "__main__":
    golden = {case_key(s, o): plan_ids(s, o) for s, o in CASES}
    OUT.write_text(json.dumps(golden, indent=0) + "\n")
    print(f"{sum(map(len, golden.values()))} ids of {len(golden)} plans -> {OUT}")
