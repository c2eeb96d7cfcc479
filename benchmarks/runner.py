"""Run the benchmarks that are modules of their own (`python -m benchmarks.<module>`) in a child process."""

from __future__ import annotations

import importlib.util
import os
import re
import site
import subprocess
import sys
from pathlib import Path

# command -> (module, top-level packages it needs beyond the trial engine's)
SCRIPTS = {
    "overhead": ("benchmarks.trial_overhead", ("ray",)),  # per-trial overhead: sweep vs a loop of stability.train
    "fused": ("benchmarks.fused_trials", ()),  # several configs of one model in one forward/backward vs one by one
    "orchestration": ("benchmarks.orchestration_share", ("ray",)),  # sweep wall time vs the trials' own work
    "fused_sweep": ("benchmarks.fused_sweep", ("ray",)),  # whole sweeps: fused_trials=K vs one trial per process
    "cifar_projection": ("benchmarks.cifar_projection", ()),  # CIFAR-10-shaped fused epochs -> cifar10_lr_wd's cost
    "compaction": ("benchmarks.compaction", ()),  # reading a 10,000-trial study before and after compaction
    "input": ("benchmarks.input_pipeline", ()),  # images/s per CPU core: imagefolder, decode once per group, shards
}
RATIO_LINE = re.compile(r"^\s*ratio\b.*", re.IGNORECASE | re.MULTILINE)


class Unavailable(Exception):
    """The benchmark's module or a package it needs is missing here; the message says which."""


def check_available(name: str) -> str:
    """The module that runs benchmark `name`; raises Unavailable when it or a package it needs is missing."""
    module, needs = SCRIPTS[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        found = False
    if not found:
        raise Unavailable(f"{name}: module {module} is not installed here")
    missing = [package for package in needs if importlib.util.find_spec(package) is None]
    if missing:
        raise Unavailable(f"{name}: needs {', '.join(missing)}, not installed here")
    return module


def child_env() -> dict[str, str]:
    """The environment of a benchmark's process: it imports this copy of `benchmarks` (and its `stability`).

    Run from a checkout that is not installed, the checkout goes on PYTHONPATH; an installed copy
    (site-packages) is found without it.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    site_dirs = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    if root not in site_dirs and root not in {str(Path(e).resolve()) for e in entries}:
        env["PYTHONPATH"] = os.pathsep.join([root, *entries])
    return env


def run_script(name: str, args: list[str]) -> tuple[int, list[str]]:
    """Run benchmark `name` with `args`, echoing its output; returns its exit code and its 'ratio ...' lines."""
    module = check_available(name)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=child_env(),
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    code = proc.wait()
    return code, [m.group(0).strip() for m in RATIO_LINE.finditer("".join(lines))]
