"""Run the benchmark scripts of `benchmarks/` (a folder of the source tree, not of the installed package)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = {
    "overhead": ("trial_overhead.py", ("ray",)),  # per-trial overhead: sweep vs a loop of stability.train
    "fused": ("fused_trials.py", ()),  # several configs of one model in one forward/backward vs one by one
    "orchestration": ("orchestration_share.py", ("ray",)),  # sweep wall time vs the trials' own work
    "fused_sweep": ("fused_sweep.py", ("ray",)),  # whole sweeps: fused_trials=K vs one trial per process
}
RATIO_LINE = re.compile(r"^\s*ratio\b.*", re.IGNORECASE | re.MULTILINE)


class Unavailable(Exception):
    """The script or a package it needs is missing here; the message says which."""


def script_path(name: str) -> Path:
    filename, needs = SCRIPTS[name]
    path = BENCHMARKS / filename
    if not path.is_file():
        raise Unavailable(f"{name}: {path} is not there (run from a checkout of the repository that has it)")
    missing = [module for module in needs if importlib.util.find_spec(module) is None]
    if missing:
        raise Unavailable(f"{name}: needs {', '.join(missing)}, not installed here")
    return path


def run_script(name: str, args: list[str]) -> tuple[int, list[str]]:
    """Run one script with `args`, echoing its output; returns its exit code and its 'ratio ...' lines."""
    path = script_path(name)
    proc = subprocess.Popen([sys.executable, str(path), *args], cwd=BENCHMARKS.parent,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    code = proc.wait()
    return code, [m.group(0).strip() for m in RATIO_LINE.finditer("".join(lines))]
