"""`python -m benchmarks {gpu,overhead,fused,orchestration,fused_sweep,cifar_projection,compaction,input,all}`: benchmarks, each a ratio against a baseline.

gpu            the trial engine vs a plain PyTorch loop: images/s and MFU per model (CUDA; --device cpu smoke-tests it)
overhead       per-trial overhead, sweep vs a loop of stability.train (benchmarks.trial_overhead; needs Ray)
fused          several configs of one model trained in one fused step vs one by one (benchmarks.fused_trials)
orchestration  sweep wall time vs the trials' own work, 1-minute trials (benchmarks.orchestration_share; needs Ray)
fused_sweep    whole sweeps with resources.fused_trials vs one trial per process (benchmarks.fused_sweep; needs Ray)
cifar_projection  CIFAR-10-shaped fused epochs of cifar10_lr_wd's models, projected to the study (benchmarks.cifar_projection)
compaction     reading a 10,000-trial study before and after `stability.results compact`, local and S3 (benchmarks.compaction)
input          images/s per CPU core: imagefolder, decode once per fused group, shards; cores per H200 (benchmarks.input_pipeline)
all            each of the above that can run here, then a table of their ratios

Arguments after `overhead`, `fused`, `orchestration`, `fused_sweep`, `cifar_projection`, `compaction` or `input` go to that benchmark's module
(e.g. `overhead --trials 4`; `python -m benchmarks fused --help` shows its options).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from benchmarks.runner import SCRIPTS, Unavailable, run_script
from benchmarks.table import print_table
from stability.cli import fail

GPU_EPILOG = ("example (on a CUDA machine): python -m benchmarks gpu --json bench.json; "
              "CPU smoke test: python -m benchmarks gpu --device cpu --models vit_p_tiny --img-size 16 "
              "--batch-size 8 --steps 2 --epochs 1 --workers 0")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_gpu_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], default=None,
                   help="comma-separated model names (default: vit_p_1gf, vit_c_1gf, vit_p_4gf, deit_small at 224 px; "
                   "vit_p_tiny at 32 px)")
    p.add_argument("--img-size", type=positive, default=None, help="resolution for every model (default: per model)")
    p.add_argument("--batch-size", type=positive, default=None, help="batch for every model (default 256; 1024 at 32 px)")
    p.add_argument("--steps", type=positive, default=50, help="steps per timed engine epoch and timed plain steps")
    p.add_argument("--epochs", type=positive, default=2, help="timed engine epochs after the warm-up epoch")
    p.add_argument("--warmup-steps", type=non_negative, default=5, help="untimed plain-loop steps")
    p.add_argument("--workers", type=non_negative, default=4, help="plain loop's DataLoader worker processes")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (CUDA when present)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile in the engine (default: on CUDA only)")
    p.add_argument("--compile-models", type=lambda s: [m for m in s.split(",") if m], default=None,
                   help="with compile on: compile only these models (comma-separated; default: every model)")
    p.add_argument("--num-classes", type=positive, default=1000, help="classes of the synthetic data")
    p.add_argument("--matmul-size", type=positive, default=None, help="peak matmul size (default 8192; 512 on the CPU)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_gpu_options(sub.add_parser("gpu", help="engine vs plain PyTorch loop: images/s, MFU", epilog=GPU_EPILOG))
    for name, (module, _) in SCRIPTS.items():
        sub.add_parser(name, help=f"run python -m {module} (arguments pass through)", add_help=False)
    add_gpu_options(sub.add_parser("all", help="every benchmark that can run here, then their ratios"))
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in SCRIPTS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, extra


def gpu(args: argparse.Namespace, argv: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """Run the GPU comparison; returns the exit code and (name, ratio) pairs for a summary."""
    import torch

    from benchmarks import gpu as bench
    from benchmarks import report

    try:
        import stability.train.engine  # noqa: F401  (fail before any work if the engine's imports are missing)
    except ImportError as exc:
        fail(f"the trial engine cannot be imported: {exc} (install it: pip install {exc.name or 'the missing package'})", 1)
    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        fail(f"--device must be cpu, cuda or auto, got {args.device!r}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available here (use --device cpu for a smoke test)")
    try:
        cases = bench.resolve_cases(args.models, args.img_size, args.batch_size)
    except bench.BenchError as exc:
        fail(str(exc))
    cuda = device.type == "cuda"
    settings = bench.Settings(device=device, steps=args.steps, epochs=args.epochs, warmup_steps=args.warmup_steps,
                              workers=args.workers, compile=cuda if args.compile is None else args.compile,
                              num_classes=args.num_classes, matmul_size=args.matmul_size or (8192 if cuda else 512),
                              compile_models=frozenset(args.compile_models) if args.compile_models else None)
    info = report.machine(device)
    peak = bench.measure_peak(device, settings.matmul_size)
    print(f"peak {peak['dtype']} matmul: {peak['tflops']:.4g} TFLOP/s", flush=True)
    command = "python -m benchmarks " + shlex.join(argv)
    results = []
    for case in cases:
        results.append(bench.run_case(case, settings, peak["tflops"], log=lambda s: print(s, flush=True)))
        if args.json:  # after every model: a run stopped part-way keeps the models it finished
            report.write_json(args.json, report.record(results, peak, settings, info, command))
    report.show(results, peak, settings, info)
    ratios = [(f"gpu engine/plain images/s, {r.model}", f"{r.ratio:.2f}x" if math.isfinite(r.ratio) else "failed")
              for r in results]
    return (1 if any(r.errors for r in results) else 0), ratios


def script(name: str, extra: list[str]) -> tuple[int, list[tuple[str, str]]]:
    code, lines = run_script(name, extra)
    return code, [(name, line) for line in lines] or [(name, "no ratio printed" if code == 0 else f"exit code {code}")]


def run_all(args: argparse.Namespace, argv: list[str]) -> int:
    worst, summary = 0, []
    for name in ("gpu", *SCRIPTS):
        print(f"\n=== {name} ===", flush=True)
        try:
            code, ratios = gpu(args, argv) if name == "gpu" else script(name, [])
        except Unavailable as exc:
            print(f"skipped: {exc}")
            summary.append((name, f"skipped: {exc}"))
            continue
        worst = max(worst, code)
        summary.extend(ratios)
    print()
    print_table("Benchmarks: ratios", ("benchmark", "ratio"), summary)
    return worst


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = parse_args(argv)
    if args.command == "gpu":
        return gpu(args, argv)[0]
    if args.command == "all":
        return run_all(args, argv)
    try:
        return script(args.command, extra)[0]
    except Unavailable as exc:
        fail(str(exc))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
