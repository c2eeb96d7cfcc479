"""Shared fixtures: a real local Ray cluster started with `ray start --head`."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _ppid(stat: str) -> int:
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


def cluster_pids(ray_tmp: str) -> dict[int, bytes]:
    """The live processes of the Ray cluster whose RAY_TMPDIR is `ray_tmp`, with their command lines.

    A process belongs to it when its environment holds RAY_TMPDIR=ray_tmp (the head's daemons, the
    workers they spawn, the test drivers) or its command line names a path under ray_tmp (its session
    directory), or when it descends from such a process. Other clusters on the machine have their own
    RAY_TMPDIR and are never listed; neither are this process and its ancestors."""
    marker = f"RAY_TMPDIR={ray_tmp}".encode()
    under = f"{ray_tmp.rstrip('/')}/".encode()
    parents, cmdlines, members = {}, {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            parents[pid] = _ppid((entry / "stat").read_text())
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if not cmdline:  # a zombie or a kernel thread: nothing left to stop
            continue
        cmdlines[pid] = cmdline
        if marker in environ.split(b"\0") or under in cmdline:
            members.add(pid)
    children = defaultdict(list)
    for pid, ppid in parents.items():
        children[ppid].append(pid)
    stack = list(members)
    while stack:
        for child in children[stack.pop()]:
            if child not in members and child in cmdlines:
                members.add(child)
                stack.append(child)
    pid = os.getpid()
    while pid > 1:  # never this test process or what started it
        members.discard(pid)
        pid = parents.get(pid, 1)
    return {pid: cmdlines[pid] for pid in members}


def trial_workers(ray_tmp: str) -> list[int]:
    """The trial processes (Ray Tune function trainables) of this test's cluster only: another job's
    cluster on the same machine has other processes of the same name."""
    return sorted(pid for pid, cmdline in cluster_pids(ray_tmp).items() if cmdline.startswith(b"ray::ImplicitFunc"))


def _program(cmdline: bytes) -> str:
    return os.path.basename(cmdline.split(b"\0", 1)[0].decode(errors="replace"))


def stop_cluster(ray_tmp: str, grace: float = 10.0) -> None:
    """Stop exactly the processes of the cluster of `ray_tmp` (not `ray stop`, which stops every Ray
    process on the machine), in `ray stop`'s order: the raylet (its workers and agents follow it), then
    the others, then the GCS (stopped together, they wait on each other). Each group gets SIGTERM,
    then SIGKILL when still alive after `grace` seconds; each list is read afresh, so only processes
    still in the cluster are signalled."""
    def send(pids, sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    groups = [lambda name: name == "raylet", lambda name: name not in ("raylet", "gcs_server"),
              lambda name: name == "gcs_server"]
    for in_group in groups:
        pids = {pid for pid, cmdline in cluster_pids(ray_tmp).items() if in_group(_program(cmdline))}
        send(pids, signal.SIGTERM)

        def gone(pids=pids):
            return not pids & set(cluster_pids(ray_tmp))

        if not wait_for(gone, timeout=grace, every=0.2):
            send(pids & set(cluster_pids(ray_tmp)), signal.SIGKILL)
            wait_for(gone, timeout=grace, every=0.2)
    send(cluster_pids(ray_tmp), signal.SIGKILL)  # whatever started while the others stopped


@pytest.fixture(scope="session")
def ray_cluster():
    """Address of a local head node (2 CPUs) shared by the Ray tests of this test process (each pytest-xdist
    worker has its own); its processes are stopped afterwards.

    Yields `address`, `env` (the environment for drivers: the cluster's RAY_TMPDIR and auth token) and
    `tmpdir` (that RAY_TMPDIR, by which `cluster_pids` tells this cluster's processes from others')."""
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Ray >= 2.59 authenticates clients of local clusters: give the head node and every
    # driver of the tests the same token.
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    subprocess.run([ray_bin(), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                    "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env, "tmpdir": tmp}
    finally:
        stop_cluster(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def run_cli(module: str, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` from the repository root."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def run_main(main, *args) -> subprocess.CompletedProcess:
    """A command's `main(argv)` in this process, as `run_cli` runs it in a new one (exit code, stdout,
    stderr), without a new interpreter's imports. For a run that starts no Ray and no process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*map(str, args)])
        except SystemExit as exc:
            code = exc.code
    return subprocess.CompletedProcess([main.__module__, *map(str, args)], code or 0, out.getvalue(), err.getvalue())


def wait_for(predicate, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False



def command_lines_while(process: subprocess.Popen, timeout: float = 600) -> set[str]:
    """The command line of every other process of the machine, sampled every 0.1 s until `process` ends."""
    import psutil

    seen: set[str] = set()

    def sample() -> bool:
        for other in psutil.process_iter(["pid", "cmdline"]):
            if other.info["pid"] != process.pid:
                seen.add(" ".join(other.info["cmdline"] or []))
        return process.poll() is not None

    assert wait_for(sample, timeout=timeout, every=0.1), f"{process.args[:3]} did not end in {timeout} s"
    return seen


@pytest.fixture
def sweep(ray_cluster):
    """`python -m stability.sweep ARGS --address <the shared cluster>` run in this process (no new
    interpreter, no second import of torch and Ray); returns its exit code, stdout and stderr as
    `run_cli` does. For runs that need no process of their own (one that is killed needs one)."""
    return lambda *args: sweep_in_process(ray_cluster, args)


def sweep_in_process(cluster: dict, args) -> subprocess.CompletedProcess:
    import ray
    from ray._raylet import AuthenticationTokenLoader, Config

    from stability.sweep.__main__ import main as sweep_main

    def reload_auth() -> None:  # Ray's C++ side reads RAY_AUTH_MODE and the token once per process
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    names = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: cluster["env"][name] for name in names})
    reload_auth()
    try:
        return run_main(sweep_main, *args, "--address", cluster["address"])
    finally:
        ray.shutdown()
        for name, value in saved.items():  # this process as it was: a later private Ray instance needs no token
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reload_auth()


@pytest.fixture(scope="session")
def tiny_study(ray_cluster, tmp_path_factory):
    """The finished tiny study (tests/data/tiny.yaml: 8 two-epoch trials on digits), swept once per test
    run on the shared cluster and shared by the tests that read it; a test that changes it copies it.
    Yields the study folder, its storage and the sweep's stderr."""
    storage = tmp_path_factory.mktemp("shared") / "runs"
    out = sweep_in_process(ray_cluster, [TESTS / "data" / "tiny.yaml", "--storage", storage])
    assert out.returncode == 0, out.stderr[-3000:]
    return {"study": storage / "tiny", "storage": storage, "stderr": out.stderr}
