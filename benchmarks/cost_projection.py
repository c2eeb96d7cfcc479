"""A GPU cluster budget for a study before any GPU has run it: the estimate's own arithmetic
(`stability.sweep.estimate`) fed with PROJECTED per-epoch figures, not measured ones.

Per model, one epoch of one trial is projected from published speed figures as

    epoch_s = max((train images x 3 + val images) x 2 x GMACs per image / (MFU x peak FLOP/s),
                  --min-epoch) / GPUs of the trial

(forward + backward = 3 forward passes, 2 FLOPs per multiply-add; GMACs from
`stability.models.model_info`; peak: one H200's measured-class dense bf16 matmul rate, about
790 TFLOP/s), plus a fixed `--overhead` per trial (start-up and compilation; an assumption). The MFU is
an assumption too: the platform's 40% target, and a lower one for small kernels; `--min-epoch` is a
floor for one epoch on a whole GPU, for models too small to fill it (kernel launches, evaluation; for
CIFAR-10, airbench's about 0.3 s per epoch of a small CNN on one A100 suggests 0.5 s). A fused
group of K trials does K trials' work per epoch. Then the estimate's
placement arithmetic (trials at once from the study's resources and the cluster's GPUs and CPUs,
first come first placed) gives the wall time and GPU-hours. Replace these figures with measured ones:
`python -m stability.sweep STUDY --dry-run --calibrate` on a GPU node caches a calibration that the
dry run and the run then use.

    python -m benchmarks.cost_projection cifar10_lr_wd --nodes 1 --gpus-per-node 1 --cpus-per-node 16
    python -m benchmarks.cost_projection paper_lr_wd --nodes 4 --gpus-per-node 8 --cpus-per-node 192
"""

from __future__ import annotations

import argparse

PEAK_FLOPS = 790e12  # one H200, dense bf16 matmul, measured-class figure
IMAGES = {"imagefolder": (1_281_167, 50_000), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}


def gmacs(model: str, img_size: int, classes: int) -> float:
    from stability.models import build_model, model_info

    return float(model_info(build_model(model, classes, img_size), img_size)["gflops"])


def projected_figures(spec, groups, mfu: float, overhead_s: float, gpus_per_trial: float,
                      min_epoch_s: float = 0.0) -> dict:
    from stability.sweep.estimate import Figure, shape_key

    train, val = IMAGES[spec.dataset.name]
    classes = 1000 if spec.dataset.name == "imagefolder" else (100 if spec.dataset.name == "cifar100" else 10)
    img_size = spec.dataset.img_size or 224
    cache: dict[str, float] = {}
    figures = {}
    for group in groups:
        model = group[0].model
        if model not in cache:
            cache[model] = gmacs(model, img_size, classes)
        flops = (train * 3 + val) * 2 * cache[model] * 1e9 * len(group)
        figures[shape_key(group[0], len(group))] = Figure(
            max(flops / (mfu * PEAK_FLOPS), min_epoch_s * len(group)) / gpus_per_trial, overhead_s, "projection",
            f"projected at {mfu:.0%} MFU of {PEAK_FLOPS / 1e12:.0f} TFLOP/s (one H200), not measured")
    return figures, cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost_projection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="built-in study or YAML path")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-node", type=int, default=192)
    parser.add_argument("--mfu", default="0.4,0.1", help="comma-separated MFU assumptions (default 0.4,0.1)")
    parser.add_argument("--overhead", type=float, default=30.0, help="assumed seconds per trial outside its epochs")
    parser.add_argument("--min-epoch", type=float, default=0.0,
                        help="assumed floor in seconds for one trial's epoch on a whole GPU (default 0)")
    args = parser.parse_args(argv)
    from stability.sampling import plan_trials
    from stability.spec import load_spec
    from stability.sweep.estimate import (
        CLUSTER_FIXED_S,
        estimate,
        per_process,
        processes,
    )

    spec = load_spec(args.study)
    groups = processes(spec, plan_trials(spec))
    cpus, gpus = args.nodes * args.cpus_per_node, args.nodes * args.gpus_per_node
    _, gpus_per_trial = per_process(spec, gpus)
    where = f"{args.nodes} node(s) x {args.gpus_per_node} GPUs, {args.cpus_per_node} CPUs"
    print(f"{spec.name}: {sum(len(g) for g in groups)} trials in {len(groups)} processes, {gpus_per_trial:g} GPU each, "
          f"on {where}")
    for mfu in (float(x) for x in args.mfu.split(",")):
        figures, macs = projected_figures(spec, groups, mfu, args.overhead, gpus_per_trial, args.min_epoch)
        result = estimate(spec, groups, figures, cpus, gpus, CLUSTER_FIXED_S, where)
        if result.wall_s is None:
            print(f"MFU {mfu:.0%}: {result.basis}")
            continue
        print(f"MFU {mfu:.0%} (projection): wall {result.wall_s / 3600:.2f} h, {result.accelerator_hours:.1f} GPU-hours, "
              f"{result.slots} trials at once")
    print("GMACs per image: " + ", ".join(f"{m} {v:.2f}" for m, v in macs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
