"""The prepared GPU check: `bash benchmarks/gpu_check.sh OUT_DIR [--device cpu]` runs this module.

Parts, one after another, each in its own process under its own time limit (and all within
`--budget-s`); one part failing never stops the next:

  environment       versions, the GPU, where pydantic and timm come from; the engine imports without
                    Ray, Optuna, Plotly or `stability.analysis`
  cuda_tests        tests/test_cuda.py alone (pytest, junit XML)
  gpu               `python -m benchmarks gpu`: engine vs plain loop, images/s and MFU
  fused             `python -m benchmarks.fused_trials`: K trials fused vs one by one
  cifar_projection  `python -m benchmarks.cifar_projection`: cifar10_lr_wd's projected cost

Every part runs through `benchmarks.without`, with Ray, Optuna, Plotly and `stability.analysis` unimportable.
OUT_DIR receives gpu_check.json (every figure, every target with pass/miss), gpu_check.md (the same
as tables), gpu_check.log (all output), cuda_tests.xml and parts/*.json (each part's own record).
Exit status 0 when every part ran to its end, 1 when one failed or ran out of time; a missed target
is a finding, recorded, not a failure. `--device cpu` rehearses the whole check on the CPU at tiny
sizes (the CUDA tests then run with the CPU as the device under test); no figure of it is a GPU figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_report import (
    junit_summary,
    markdown,
    pytest_log_summary,
    targets,
)
from benchmarks.without import within

REPO = Path(__file__).resolve().parents[1]
HIDDEN = "ray,optuna,plotly,stability.analysis"  # packages no part may import (absent on the GPU machine, or not on this path)
BUDGET_S = {"cuda": 285.0, "cpu": 600.0}  # all parts together (the shell's wheel install comes before)
PART_NAMES = ("environment", "cuda_tests", "gpu", "fused", "cifar_projection")  # in the order they run
MIN_PART_S = 10.0  # a part offered less time than this is not started
PART_ENV = {"cuda": {}, "cpu": {"OMP_NUM_THREADS": "1"}}  # CPU: one thread (spinning threads crawl on a shared box)
GPU_BENCH_MODELS = "vit_p_1gf,vit_c_1gf,deit_small,vit_p_tiny,vit_p_4gf"  # eager ones first, the compiled headline last

# Per device: each part's time limit (s) and its arguments. CUDA sizes fit 5 minutes on one H200 with a
# cold torch.compile; CPU sizes only rehearse the plumbing.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "cuda": {
        "environment": {"timeout_s": 25},  # the first torch import on a fresh machine may be slow
        "cuda_tests": {"timeout_s": 60},
        "gpu": {"timeout_s": 125, "args": [  # 20 steps x 2 timed epochs; compile only the MFU target's model
            "--device", "cuda", "--models", GPU_BENCH_MODELS, "--steps", "20", "--epochs", "2", "--warmup-steps", "2",
            "--workers", "8", "--compile", "--compile-models", "vit_p_4gf"]},
        "fused": {"timeout_s": 40, "args": [  # the default study's recipe on digits at 32 px, K=16, 2 epochs
            "--device", "cuda", "-k", "16", "--img-size", "32", "--epochs", "2"]},
        "cifar_projection": {"timeout_s": 35, "args": [  # K=16, batch 512, a quarter of CIFAR-10's images per epoch
            "--device", "cuda", "-k", "16", "--fraction", "0.25", "--epochs", "2"]},
    },
    "cpu": {
        "environment": {"timeout_s": 40},
        "cuda_tests": {"timeout_s": 180},
        "gpu": {"timeout_s": 180, "args": [  # every model at 32 px, batch 8, 2 steps; compile the smallest
            "--device", "cpu", "--models", GPU_BENCH_MODELS, "--img-size", "32", "--batch-size", "8", "--steps", "2",
            "--epochs", "1", "--warmup-steps", "1", "--workers", "0", "--matmul-size", "256", "--compile",
            "--compile-models", "vit_p_tiny"]},
        "fused": {"timeout_s": 100, "args": ["--device", "cpu", "-k", "2", "--img-size", "8", "--epochs", "1"]},
        "cifar_projection": {"timeout_s": 100, "args": ["--device", "cpu"]},  # the module's CPU sizes
    },
}


@dataclass(frozen=True)
class Part:
    name: str
    argv: tuple[str, ...]  # after `python -m benchmarks.without HIDDEN`: module, then its arguments
    timeout_s: float
    record: str | None = None  # JSON file (under OUT_DIR) holding the part's figures
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of the part's process
    junit: str | None = None  # pytest's junit XML file, for a part that runs tests


def plan(device: str, out_dir: Path) -> list[Part]:
    sizes = SIZES[device]
    parts_dir = out_dir / "parts"
    env = PART_ENV[device]
    junit = str(out_dir / "cuda_tests.xml")
    tests_env = {**env, "STABILITY_TEST_DEVICE": "cpu"} if device == "cpu" else env
    return [
        Part("environment", ("benchmarks.gpu_check", "--probe", str(parts_dir / "environment.json")),
             sizes["environment"]["timeout_s"], str(parts_dir / "environment.json"), env),
        Part("cuda_tests", ("pytest", "tests/test_cuda.py", "-p", "no:cacheprovider", "-v", "-rfEs",
                            f"--junitxml={junit}"), sizes["cuda_tests"]["timeout_s"], None,
             tests_env, junit),
        Part("gpu", ("benchmarks", "gpu", *sizes["gpu"]["args"], "--json", str(parts_dir / "gpu.json")),
             sizes["gpu"]["timeout_s"], str(parts_dir / "gpu.json"), env),
        Part("fused", ("benchmarks.fused_trials", *sizes["fused"]["args"], "--json", str(parts_dir / "fused.json")),
             sizes["fused"]["timeout_s"], str(parts_dir / "fused.json"), env),
        Part("cifar_projection", ("benchmarks.cifar_projection", *sizes["cifar_projection"]["args"], "--json",
                                  str(parts_dir / "cifar_projection.json")),
             sizes["cifar_projection"]["timeout_s"], str(parts_dir / "cifar_projection.json"), env),
    ]


def stream(proc: subprocess.Popen, sinks: list, lines: list[str]) -> None:
    """Copy the part's output to every sink as it comes, and keep it in `lines`."""
    assert proc.stdout is not None
    for line in proc.stdout:
        for sink in sinks:
            sink.write(line)
            sink.flush()
        lines.append(line.rstrip("\n"))


def stop(proc: subprocess.Popen) -> None:
    """End the part's whole process group (its DataLoader and compile workers too)."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_part(part: Part, python: str, timeout_s: float, log, env: dict[str, str]) -> dict[str, Any]:
    """Run one part; its status, exit code, wall time, last output lines and record (None when absent)."""
    argv = [python, "-m", "benchmarks.without", HIDDEN, *part.argv]
    header = f"\n=== {part.name} (limit {timeout_s:.0f} s): {shlex.join(argv)}\n"
    for sink in (sys.stdout, log):
        sink.write(header)
        sink.flush()
    for stale in (part.record, part.junit):  # a file of an earlier run is no result of this one
        if stale:
            Path(stale).unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env={**env, **part.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=stream, args=(proc, [sys.stdout, log], lines), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        stop(proc)
        code, timed_out = proc.returncode, True
    reader.join(10)
    result: dict[str, Any] = {"command": shlex.join(argv), "timeout_s": timeout_s,
                              "wall_s": time.perf_counter() - start, "exit_code": code, "tail": lines[-20:]}
    result["record"] = read_json(part.record)
    result["status"], result["note"] = part_status(timed_out, code, result["record"], part.record)
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if result["status"] != "ok" and last:
        result["note"] += f"; last output: {last[:200]}"
    if part.junit:
        tests_status(result, part.junit, "\n".join(lines))
    return result


def read_json(path: str | None) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text()) if path else None
    except (OSError, ValueError):
        return None


def part_status(timed_out: bool, code: int | None, record: dict | None, record_path: str | None) -> tuple[str, str]:
    if timed_out:
        return "timed out", "stopped at its time limit" + ("; figures up to then kept" if record else "")
    if code != 0:
        return "failed", f"exit code {code}" + ("; figures up to then kept" if record else "")
    if record_path and record is None:
        return "failed", "no JSON record written"
    return "ok", ""


def tests_status(result: dict[str, Any], xml_path: str, output: str) -> None:
    """Fill the CUDA tests' outcomes in; every test must run and pass (a skip means no CUDA device)."""
    try:
        tests = junit_summary(xml_path)
    except (OSError, ValueError, SyntaxError):  # no XML: stopped early; read what the output shows
        tests = pytest_log_summary(output)
    result["tests"] = tests
    counts = f"{tests['passed']} passed, {tests['failed']} failed, {tests['error']} errors, {tests['skipped']} skipped"
    if result["status"] == "ok" and (tests["skipped"] or not tests["passed"]):
        result["status"] = "failed"
    skips = "a skipped test means no CUDA device was seen" if tests["skipped"] else ""
    result["note"] = "; ".join(filter(None, [counts, skips, result["note"]]))


def probe(path: str) -> int:
    """The environment part: versions, the device, where packages come from, and the engine's imports."""
    import importlib
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "cpus": os.cpu_count(), "host": platform.node()}
    import torch

    info.update(torch=torch.__version__, cuda_available=torch.cuda.is_available(), cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    for name in ("timm", "pydantic", "numpy", "pyarrow", "yaml", "sklearn"):
        try:
            module = importlib.import_module(name)
            info[name], info[f"{name}_from"] = getattr(module, "__version__", "?"), str(Path(module.__file__).parent)
        except ImportError as exc:
            info[name] = f"missing: {exc}"
    engine = ("stability.train.engine", "stability.train.fused.engine", "stability.sampling", "benchmarks.gpu",
              "benchmarks.fused_trials", "benchmarks.cifar_projection")
    failures = {}
    for name in engine:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            failures[name] = str(exc)
    info["engine_import_errors"] = failures
    info["hidden_loaded"] = sorted({h for h in HIDDEN.split(",") if any(within(m, [h]) for m in sys.modules)})
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                              "temperature.gpu,power.draw", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"not available: {exc}"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return 1 if failures or info["hidden_loaded"] else 0


def assemble(parts: dict[str, dict[str, Any]], device: str, command: str, wall_s: float,
             budget_s: float) -> dict[str, Any]:
    """The check's JSON record: every part, every figure, every target."""
    return {
        "date": datetime.date.today().isoformat(), "command": command, "device": device,
        "rehearsal": device != "cuda", "budget_s": budget_s, "wall_s": wall_s,
        "ok": all(p["status"] == "ok" for p in parts.values()),
        "environment": (parts.get("environment") or {}).get("record"),
        "parts": parts, "targets": targets(parts, device),
    }


def write(out_dir: Path, check: dict[str, Any]) -> None:
    (out_dir / "gpu_check.json").write_text(json.dumps(check, indent=2) + "\n")
    (out_dir / "gpu_check.md").write_text(markdown(check))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", help="folder for gpu_check.json, gpu_check.md, the log and the parts")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=os.environ.get("GPU_CHECK_DEVICE", "cuda"),
                        help="cuda (default; env GPU_CHECK_DEVICE) or cpu: a rehearsal at tiny sizes")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time for all parts together (default: per device)")
    parser.add_argument("--parts", type=lambda s: s.split(","), default=None, help="run only these parts")
    parser.add_argument("--probe", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.probe and not args.out_dir:
        parser.error("OUT_DIR is required")
    unknown = sorted(set(args.parts or ()) - set(PART_NAMES))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PART_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.probe:
        return probe(args.probe)
    out_dir = Path(args.out_dir).resolve()
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or BUDGET_S[args.device]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    command = f"bash benchmarks/gpu_check.sh OUT_DIR --device {args.device}"
    with open(out_dir / "gpu_check.log", "a") as log:
        for part in plan(args.device, out_dir):
            if args.parts and part.name not in args.parts:
                continue
            left = budget - (time.perf_counter() - start)
            if left < MIN_PART_S:
                results[part.name] = {"status": "not run", "note": f"only {left:.0f} s of the budget left",
                                      "timeout_s": 0, "wall_s": 0, "record": None}
                continue
            results[part.name] = run_part(part, sys.executable, min(part.timeout_s, left), log, env)
            write(out_dir, assemble(results, args.device, command, time.perf_counter() - start, budget))
    check = assemble(results, args.device, command, time.perf_counter() - start, budget)
    write(out_dir, check)
    print("\n" + markdown(check))
    print(f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
