"""The Ray cluster a sweep runs on: connecting (or starting a private local instance), and the
resources one trial takes on it."""

from __future__ import annotations

import os
from typing import Any

from stability.cli import UsageError
from stability.spec import StudySpec

TRIAL_DRIVER_CPUS = 0.01  # a data-parallel trial's own process only drives its TorchTrainer


def versions() -> dict[str, str]:
    """Versions of the packages that shape results, read from their metadata (importing torch costs seconds)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import stability

    found = {"stability": stability.__version__, "python": platform.python_version()}
    for package in ("torch", "timm", "ray", "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def connect_ray(address: str | None, num_cpus: int | None, verbose: bool) -> None:
    """Join the cluster at `address`; without one, start a private local Ray instance (never a
    cluster that happens to run on this machine)."""
    import logging

    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # results go to our own store; Tune's default CSV/JSON/TensorBoard loggers would only duplicate
    # them per trial, and the TensorBoard one imports torch into the driver (seconds per sweep)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not verbose:  # Tune's legacy reporter honours verbose=0; keep trial tracebacks out of the live line
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        logging.getLogger("ray.train").setLevel(logging.CRITICAL)
    common: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
    try:
        if address:
            ray.init(address=address, **common)
        else:  # a private local instance, reachable from this machine only: "local" starts one even when
            # a cluster started by `ray start` (found through RAY_TMPDIR) or RAY_ADDRESS is there to join
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     **common)
    except ConnectionError as exc:
        raise UsageError(f"--address {address}: cannot connect to Ray ({str(exc).splitlines()[0]}); "
                         "start a cluster with `ray start --head` or omit --address") from None


def placement(spec: StudySpec) -> dict[str, Any]:
    """Resources per trial, with GPUs decided by what the cluster has; refuses a trial that
    could never be placed (Ray would wait for it forever)."""
    import ray

    res = spec.resources
    cluster = ray.cluster_resources()
    gpus = res.gpus_per_worker
    if gpus is None:
        gpus = 1.0 / res.trials_per_gpu if cluster.get("GPU", 0) > 0 else 0.0
    cpus_needed = res.workers_per_trial * res.cpus_per_worker + (TRIAL_DRIVER_CPUS if res.workers_per_trial > 1 else 0)
    gpus_needed = res.workers_per_trial * gpus
    if cpus_needed > cluster.get("CPU", 0) or gpus_needed > cluster.get("GPU", 0):
        raise UsageError(f"resources: one trial needs {cpus_needed:g} CPUs and {gpus_needed:g} GPUs but the cluster has "
                         f"{cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs; lower "
                         f"resources.workers_per_trial / cpus_per_worker / gpus_per_worker")
    return {"workers_per_trial": res.workers_per_trial, "cpus_per_worker": res.cpus_per_worker, "gpus_per_worker": gpus}
