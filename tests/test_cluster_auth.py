"""`--address host:port` and Ray's token authentication (Ray >= 2.59), against real `ray start` clusters.

Ray turns token authentication on for a head started where a token exists (`~/.ray/auth_token`),
and a driver given host:port sends its token only when RAY_AUTH_MODE=token. The sweep runs here as
a user would: no RAY_AUTH_MODE and no RAY_AUTH_TOKEN in its environment, the token (if any) only in
HOME/.ray/auth_token. Each cluster has its own RAY_TMPDIR and HOME and is stopped by PID."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TESTS, cluster_pids, free_port, ray_bin, run_cli, stop_cluster

pytestmark = pytest.mark.ray

TINY = str(TESTS / "data" / "tiny.yaml")
SMALL = ["--set", "samples=1", "--set", "epochs=1", "--set", "models=[vit_p_tiny]"]  # 2 trials, seconds
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
# Ray retries a refused handshake for about 20 s after the interpreter's start-up (3-4 s here, up to
# twice that while the suite's other worker trains); failing at once stays well under this bound
BEFORE_RETRIES_S = 15


def _home_with_token(token: str | None) -> str:
    home = tempfile.mkdtemp(prefix="rayhome")
    if token is not None:
        (Path(home) / ".ray").mkdir()
        (Path(home) / ".ray" / "auth_token").write_text(token)
    return home


def _env(ray_tmp: str, home: str, **extra: str) -> dict:
    """A user's environment: no Ray authentication variables, its own HOME, the cluster's RAY_TMPDIR."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    return {**env, "HOME": home, "RAY_TMPDIR": ray_tmp, **extra}


def _head(**extra: str):
    """Start a head node under a private RAY_TMPDIR and a HOME holding a token; yield its address and
    that token; stop exactly its processes afterwards."""
    token = secrets.token_hex(32)
    home = _home_with_token(token)
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    try:
        out = subprocess.run([ray_bin(), "start", "--head", f"--port={port}", "--num-cpus=1",
                              "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                             env=_env(ray_tmp, home, **extra), capture_output=True, text=True, timeout=180, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        yield {"address": f"127.0.0.1:{port}", "token": token, "tmp": ray_tmp, "home": home, "log": out.stderr}
    finally:
        stop_cluster(ray_tmp)
        assert not cluster_pids(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def token_cluster():
    """A head started as `ray start --head` does by default where a token file exists: token authentication."""
    yield from _head()


@pytest.fixture(scope="module")
def open_cluster():
    """A head started without authentication although a token file exists (RAY_AUTH_MODE=disabled for `ray start`)."""
    yield from _head(RAY_AUTH_MODE="disabled")


@pytest.fixture
def homes():
    made = []

    def home(token: str | None) -> str:
        made.append(_home_with_token(token))
        return made[-1]

    yield home
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _ran_on_cluster(out: subprocess.CompletedProcess, storage: Path) -> None:
    """The sweep finished and stored its 2 trials."""
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(storage / "tiny" / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) <= {"ok", "diverged"}, trials


def test_token_cluster_is_joined_by_host_port_with_the_token_file_alone(token_cluster, homes, tmp_path):
    assert "Token authentication is enabled" in token_cluster["log"], "the premise: Ray turned auth on by itself"
    env = _env(token_cluster["tmp"], homes(token_cluster["token"]))
    out = run_cli("stability.sweep", TINY, "--address", token_cluster["address"], "--storage", str(tmp_path), *SMALL,
                  env=env)
    _ran_on_cluster(out, tmp_path)
    for noise in ("gcs_client.cc", "Unauthenticated", "InvalidAuthToken"):
        assert noise not in out.stderr, "the refused first handshake is not reported to the user"


def test_refused_token_fails_at_once_in_one_line(token_cluster, homes, tmp_path):
    env = _env(token_cluster["tmp"], homes(secrets.token_hex(32)))  # some other cluster's token
    storage = tmp_path / "runs"
    started = time.monotonic()
    out = run_cli("stability.sweep", TINY, "--address", token_cluster["address"], "--storage", str(storage), *SMALL,
                  env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert token_cluster["address"] in lines[0] and "refused" in lines[0] and "token authentication" in lines[0]
    assert "RAY_AUTH_TOKEN" in lines[0] and "RAY_AUTH_TOKEN_PATH" in lines[0]
    assert elapsed < BEFORE_RETRIES_S, f"{elapsed:.1f} s: the promise is to fail before Ray's ~20 s of connection retries"
    assert not storage.exists(), "nothing may be written before the cluster took the token"


def test_token_cluster_without_any_token_here_says_what_to_set(token_cluster, homes, tmp_path):
    env = _env(token_cluster["tmp"], homes(None))
    started = time.monotonic()
    out = run_cli("stability.sweep", TINY, "--address", token_cluster["address"], "--storage", str(tmp_path / "runs"),
                  *SMALL, env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "requires token authentication" in lines[0] and "RAY_AUTH_TOKEN" in lines[0], lines
    assert elapsed < BEFORE_RETRIES_S, f"{elapsed:.1f} s"


def test_cluster_without_auth_is_joined_although_a_token_file_exists(open_cluster, homes, tmp_path):
    assert "Token authentication is enabled" not in open_cluster["log"]
    env = _env(open_cluster["tmp"], homes(secrets.token_hex(32)))
    out = run_cli("stability.sweep", TINY, "--address", open_cluster["address"], "--storage", str(tmp_path), *SMALL,
                  env=env)
    _ran_on_cluster(out, tmp_path)
