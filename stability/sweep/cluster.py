"""The Ray cluster a sweep runs on: connecting (or starting a private local instance), and the
resources one trial takes on it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stability.cli import UsageError, first_line
from stability.spec import StudySpec

TRIAL_DRIVER_CPUS = 0.01  # a data-parallel trial's own process only drives its TorchTrainer
AUTH_PROBE_TIMEOUT_MS = 5000  # one GCS handshake; a refused token answers in milliseconds
_AUTH_READY: set[str] = set()  # addresses whose authentication this process has settled


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


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (Ray's C++ client logs a failed handshake there; the probe's
    caller reports the outcome itself in one line)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _token_source() -> str:
    """Where Ray reads this machine's token, in Ray's own order."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return str(Path.home() / ".ray" / "auth_token")


def prepare_token_auth(address: str) -> None:
    """Settle token authentication with the cluster at `address` (host:port) before `ray.init`.

    Ray (>= 2.59) enables token authentication by itself only for `address="auto"`; a driver given
    host:port connects as RAY_AUTH_MODE says, and a cluster that wants a token then costs Ray's
    ~20 s of connection retries before a vague error. So one GCS handshake is tried first, as the
    environment says: accepted (a cluster without authentication, or the mode already right)
    changes nothing; refused for a missing token, with RAY_AUTH_MODE unset and a token at hand
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), turns token mode on for this
    process (RAY_AUTH_MODE=token, as `ray.init(address="auto")` does) and tries again. A token
    refused, none at hand, or RAY_AUTH_MODE set to something else ends the run in one line. A
    handshake that fails for another reason is left to `ray.init` and its own error."""
    if address in _AUTH_READY:
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config, InnerGcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # a Ray without token authentication: nothing to settle
        _AUTH_READY.add(address)
        return

    def accepted() -> bool | None:
        """True: the GCS took this process's credentials; False: it refused them; None: no answer."""
        with _quiet_stderr():
            try:
                InnerGcsClient.standalone(address, None, AUTH_PROBE_TIMEOUT_MS)
            except AuthenticationError:
                return False
            except Exception:  # noqa: BLE001 -- unreachable, not a GCS, too slow: ray.init will say so
                return None
        return True

    if accepted() is not False:
        _AUTH_READY.add(address)
        return
    where = f"--address {address}: the cluster requires token authentication"
    hint = ("set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file holding it) to the cluster's token; "
            "`ray get-auth-token` on its head node prints it")
    loader = AuthenticationTokenLoader.instance()
    try:
        has_token = loader.has_token(ignore_auth_mode=True)
    except AuthenticationError as exc:  # e.g. RAY_AUTH_TOKEN_PATH names a missing or empty file
        first = (str(getattr(exc, "message", exc)).strip().splitlines() or ["unreadable"])[0]  # without Ray's notes
        raise UsageError(f"{where} but this machine's Ray token cannot be read ({first}); {hint}") from None
    if not has_token:
        raise UsageError(f"{where} and no Ray token is set on this machine; {hint}")
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None:
        os.environ["RAY_AUTH_MODE"] = "token"  # read by Ray's C++ config, here and in child processes
        Config.initialize("")  # refresh the config this process has already loaded
        loader.reset_cache()
        if accepted() is not False:
            _AUTH_READY.add(address)
            return
    elif mode.lower() != "token":
        raise UsageError(f"{where} but RAY_AUTH_MODE={mode} here; unset RAY_AUTH_MODE (or set it to token) and "
                         f"{hint}")
    raise UsageError(f"--address {address}: the cluster refused this machine's Ray token from {_token_source()} "
                     f"(token authentication); {hint}")


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
            if address != "auto" and not address.startswith("ray://"):
                prepare_token_auth(address)  # settled by check_address already; a no-op then
            ray.init(address=address, **common)
        else:  # a private local instance, reachable from this machine only: "local" starts one even when
            # a cluster started by `ray start` (found through RAY_TMPDIR) or RAY_ADDRESS is there to join
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     **common)
    except ConnectionError as exc:
        raise UsageError(f"--address {address}: cannot connect to Ray ({first_line(exc)}); "
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
