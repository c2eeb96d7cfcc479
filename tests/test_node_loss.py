"""A node lost mid-trial, on a real two-worker-node Ray cluster started on this machine: the trial
is retried on the other node from its last checkpoint and ends exactly as the uninterrupted run.

The head takes no trials (0 CPUs); nodes A and B take one trial each. The test kills the raylet of
the node running the trial and every process under it, by PID. The GCS health check is tightened so
the lost node is noticed in seconds. One machine shares one disk, so node-local storage bugs cannot
show here (docs/reliability.md)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile

import psutil
import pytest

from conftest import _program, cluster_pids, free_port, ray_bin, stop_cluster, trial_workers, wait_for
from test_resume import check_resumed_exactly, checkpoint_after, reference, start_sweep, write_study

pytestmark = pytest.mark.ray

HEALTH_CHECK = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
                "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}


@pytest.fixture(scope="module")
def two_nodes():
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, **HEALTH_CHECK, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    common = ["--num-gpus=0", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin(), "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                        *common], env=env, check=True, capture_output=True, timeout=180)
        for _ in range(2):
            subprocess.run([ray_bin(), "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", *common],
                           env=env, check=True, capture_output=True, timeout=180)
        yield {"address": f"127.0.0.1:{port}", "env": env, "tmpdir": tmp}
    finally:
        stop_cluster(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _parent(pid: int) -> int:
    return psutil.Process(pid).ppid()


def node_of(pid: int, processes: dict[int, bytes]) -> int:
    """The raylet a worker process runs under."""
    while pid in processes and _program(processes[pid]) != "raylet":
        pid = _parent(pid)
    assert pid in processes, "the trial worker is not under a raylet of this cluster"
    return pid


def under(root: int, processes: dict[int, bytes]) -> set[int]:
    found = {root}
    grew = True
    while grew:
        more = {pid for pid in processes if pid not in found and _parent(pid) in found}
        found |= more
        grew = bool(more)
    return found


def test_a_lost_node_s_trial_finishes_on_another_node_from_its_checkpoint(two_nodes, tmp_path):
    study = write_study(tmp_path)
    expected = reference(study, fused=False)
    driver = start_sweep(study, two_nodes, tmp_path)
    try:
        saved = checkpoint_after(tmp_path / "resume", 3)
        workers = trial_workers(two_nodes["tmpdir"])
        processes = cluster_pids(two_nodes["tmpdir"])  # read after: it holds every worker found
        assert workers, "no trial worker of this cluster"
        raylet = node_of(workers[0], processes)
        raylets = [pid for pid, cmd in processes.items() if _program(cmd) == "raylet"]
        assert len(raylets) == 3 and raylet in raylets
        for pid in under(raylet, processes):  # the whole node: its raylet, workers and agents
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, err[-3000:]
    check_resumed_exactly(tmp_path / "resume", expected, saved)
    assert wait_for(lambda: raylet not in cluster_pids(two_nodes["tmpdir"]), timeout=10)
