"""Joining a Ray cluster as an operator does: a head started by `ray start --head` in another process on a
machine with a Ray token (`~/.ray/auth_token`, so Ray turns token authentication on), then `up`, `submit`,
`status` and `down` run against it by address, each a new process with RAY_AUTH_MODE unset; and token mode
turned on exactly when a token is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), never against an opt-out."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from driver.runtime import ray_cli
from tests.helpers import essays, free_port, processes_mentioning, wait_until

pytestmark = pytest.mark.ray  # starts Ray heads in subprocesses

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def token_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head with its own token in its own HOME; yields its address and the environment of a user there."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    temp = tempfile.mkdtemp(prefix="cjray", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CJ_"))} | {"HOME": str(home)}
    port = free_port()
    started = subprocess.run(
        [ray_cli(), "start", "--head", f"--port={port}", f"--ray-client-server-port={free_port()}",
         f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats", "--num-cpus=2"],
        env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        for pid in processes_mentioning(temp):  # this head only: `ray stop` would stop the session's Ray too
            try:
                os.kill(pid, signal.SIGKILL)  # as `ray stop --force` does (the GCS outlives a SIGTERM)
            except ProcessLookupError:
                pass
        wait_until(lambda: not processes_mentioning(temp), timeout_s=60, what="the head's processes gone")
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.timeout(300)
def test_up_submit_status_down_join_a_token_authenticated_head_by_address(token_head, pg_url, sim_server, tmp_path):
    address, env = token_head
    env |= {"CJ_DATABASE_URL": pg_url, "CJ_PROVIDER_BASE_URL": f"http://127.0.0.1:{sim_server.port}",
            "CJ_STATE_DIR": str(tmp_path / "state"), "CJ_RAY_NAMESPACE": f"cj-join-{secrets.token_hex(3)}",
            "CJ_WORKERS": "1", "CJ_SCORERS": "1", "CJ_METRICS_PORT": "0", "CJ_HTTP_PORT": str(free_port())}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "launch.py", *args, "--address", address], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{args[0]}: {done.stderr[-2000:]}"
        assert "Connecting to existing Ray cluster" not in done.stderr  # Ray's own lines only with --verbose
        return done

    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"essays": essays(5, "join"), "max_comparisons": 10}))
    up = cli("up").stdout
    token = (tmp_path / "state" / "api_token").read_text().strip()
    assert token in up and "printed this once" in up  # the first `up` prints the API token it generated
    assert token not in cli("up").stdout  # and only then
    result = json.loads(cli("submit", str(batch), "--wait", "--json").stdout)
    assert result["state"] == "COMPLETED" and result["counters"]["completed"] == 10
    status = json.loads(cli("status", result["batch_id"], "--json").stdout)
    assert status["state"] == "COMPLETED"
    http = f"http://127.0.0.1:{env['CJ_HTTP_PORT']}"
    shown = httpx.get(f"{http}/v1/batches/{result['batch_id']}", headers={"Authorization": f"Bearer {token}"})
    assert shown.json()["state"] == "COMPLETED"  # `up` serves the HTTP API over the same record
    assert "landed" in cli("down").stdout
    # and `down` deletes it (on a cluster `down` did not start, Serve's proxy stays for other applications)
    assert httpx.get(f"{http}/healthz").status_code == 404


@pytest.mark.parametrize(("env", "mode"), [
    ({"RAY_AUTH_TOKEN": "t" * 32}, "token"),  # a token in the environment
    ({"RAY_AUTH_TOKEN_PATH": "TOKENFILE"}, "token"),  # a token file named
    ({}, None),  # no token at hand: Ray's default stays
    ({"RAY_AUTH_TOKEN": "t" * 32, "RAY_AUTH_MODE": "disabled"}, "disabled"),  # the documented opt-out
], ids=["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "no token", "opted out"])
def test_token_mode_is_turned_on_exactly_when_a_token_is_at_hand(tmp_path, env, mode):
    (tmp_path / "token").write_text("f" * 32)
    env = {k: v.replace("TOKENFILE", str(tmp_path / "token")) for k, v in env.items()}
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path)}
    probe = "import os; from driver.runtime import enable_token_auth; enable_token_auth(); " \
            "print(os.environ.get('RAY_AUTH_MODE'))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=base | env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(mode)


@pytest.mark.parametrize(("env", "made"), [({}, True), ({"RAY_AUTH_MODE": "disabled"}, False)],
                         ids=["fresh host", "opted out"])
def test_up_makes_a_token_first_on_a_host_with_none_so_its_head_is_authenticated(tmp_path, env, made):
    """Ray turns token mode on only when a token exists; `up` on a fresh host (no ~/.ray) creates one first."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path)}
    probe = "import os; from driver.runtime import ensure_auth_token, enable_token_auth; ensure_auth_token(); " \
            "print(enable_token_auth(), os.environ.get('RAY_AUTH_MODE'))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=base | env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    token = tmp_path / ".ray" / "auth_token"
    assert token.exists() is made
    if made:
        assert len(token.read_text().strip()) >= 32 and (token.stat().st_mode & 0o077) == 0
        assert done.stdout.split()[-1] == "token"
