"""Bringing up what a batch needs: the database, Ray and (without an API key) the simulated provider.

`demo` and the tests use a fresh local Ray in this process; `up` starts a persistent Ray head and
records where the database and provider are in `<state_dir>/deployment.json`, which later `submit`,
`status` … processes read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cjcore.errors import ConfigError
from cjcore.settings import REDACTED, Settings, has_secret, redacted
from storage.database import embedded_pgdata, make_engine, start_embedded
from storage.migrate import upgrade

log = logging.getLogger(__name__)


def deployment_file(settings: Settings) -> Path:
    return settings.state_dir / "deployment.json"


def write_deployment(settings: Settings, started_at: float) -> Path:
    """`<state dir>/deployment.json` for later commands on this machine: readable by its owner only, and with
    no secret in it (a password in CJ_DATABASE_URL stays in the environment of the commands that need it)."""
    path = deployment_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"settings": settings.public(), "started_at": started_at}, f, indent=1)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    return path


def read_deployment(settings: Settings) -> dict[str, Any] | None:
    path = deployment_file(settings)
    return json.loads(path.read_text()) if path.exists() else None


def resolve_database(settings: Settings, *, keep_running: bool = False) -> Settings:
    """Settings with `database_url` filled in: the given URL, a running deployment's, or an embedded
    server started now in the state directory. Migrations are applied and enums checked."""
    url = settings.database_url
    if url is None:
        url = start_embedded(embedded_pgdata(settings.state_dir), keep_running=keep_running)
    resolved = settings.model_copy(update={"database_url": url})
    asyncio.run(migrate(url))
    return resolved


async def migrate(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    except OSError as exc:
        raise ConfigError(f"CJ_DATABASE_URL: cannot reach {redacted(url)}: {exc}") from None
    finally:
        await engine.dispose()


# Every batch's coordinator is a process that takes ~2 s of CPU to start (an empty Ray actor takes ~2 s
# here; our imports add ~0.6 s). A hundred batches submitted at once on 2 cores start their coordinators
# for minutes, past Ray's 60 s worker registration timeout, after which Ray starts them all again.
RAY_NODE_ENV = {"RAY_worker_register_timeout_seconds": "900"}


def _node_env() -> None:
    """Settings for the Ray processes this driver starts (raylet and workers inherit the environment)."""
    for name, value in RAY_NODE_ENV.items():
        os.environ.setdefault(name, value)


def init_ray(settings: Settings, *, local: bool) -> None:
    """Start a fresh local Ray in this process (local=True) or join CJ_RAY_ADDRESS / a running head."""
    import ray

    if ray.is_initialized():
        return
    # Every actor of the job logs JSON lines with Ray's fields (actor_name, actor_id, node_id, job_id…)
    # plus ours (batch_id, correlation_id) at CJ_LOG_LEVEL.
    logging_config = ray.LoggingConfig(encoding="JSON", log_level=settings.log_level)
    driver_handlers = list(logging.getLogger().handlers)
    if local:
        _node_env()
        with secrets_in_env(settings):  # the node's processes inherit it; actors' arguments never hold it
            ray.init(address="local", namespace=settings.ray_namespace, include_dashboard=False,
                     log_to_driver=False, configure_logging=False, logging_config=logging_config)
    else:
        enable_token_auth()
        address = settings.ray_address or "auto"
        try:
            ray.init(address=address, namespace=settings.ray_namespace, log_to_driver=False,
                     configure_logging=False, logging_config=logging_config)
        except ConnectionError as exc:
            raise ConfigError(f"CJ_RAY_ADDRESS: cannot join the Ray cluster at {address} ({exc}). A cluster with "
                              f"token authentication needs its token here: RAY_AUTH_TOKEN=… or the head's "
                              f"~/.ray/auth_token (`ray get-auth-token` on the head prints it)") from None
    if driver_handlers:  # the driver keeps the format it chose; the JSON config is for the actors
        logging.getLogger().handlers[:] = driver_handlers


def enable_token_auth() -> bool:
    """Turn Ray's token authentication on for this process (and the `ray` commands it starts) when
    RAY_AUTH_MODE is unset and a token is at hand: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    That is the rule `ray start --head` follows (Ray 2.60), but a process joining by address sends the token
    only in token mode: without this, joining such a head fails with "Failed to connect to Ray cluster".
    RAY_AUTH_MODE=disabled opts out. Ray's own function, so its token sources stay Ray's."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication (before 2.52)
        return False
    quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its notice would repeat on every command
    try:
        return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))
    finally:
        quiet.setLevel(level)


def ray_cli() -> str:
    """The `ray` command of this interpreter's environment (a venv called by its path is not on PATH, and
    the first `ray` on PATH may belong to another Python)."""
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise ConfigError(f"no `ray` command beside {sys.executable} or on PATH: pip install -e . first")
    return found


def ensure_auth_token() -> None:
    """Before `up` starts a head: make sure a token exists (as `ray get-auth-token --generate` does, into
    ~/.ray/auth_token, 0600), so every head `up` starts is authenticated; Ray turns token mode on only when a
    token is already at hand. RAY_AUTH_MODE=disabled opts out; a token in the environment is used as it is."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    done = subprocess.run([ray_cli(), "get-auth-token", "--generate"], capture_output=True, text=True)
    token = Path.home() / ".ray" / "auth_token"
    if done.returncode != 0 or not token.exists():  # a Ray without token authentication: as Ray decides
        log.warning("could not generate a Ray auth token (%s)", (done.stderr.strip().splitlines() or ["?"])[-1])
        return
    token.chmod(0o600)  # a secret: Ray writes it readable by everyone


@contextlib.contextmanager
def secrets_in_env(settings: Settings) -> Iterator[None]:
    """While a node's Ray starts: CJ_DATABASE_URL in this process's environment when the URL has a password, and
    CJ_EVENT_WEBHOOK_URL when a webhook is set, so the node's processes (and so its actors) inherit them: the
    same route as the API key, never an actor's argument. Restored after."""
    wanted = {}
    if settings.database_url and has_secret(settings.database_url):
        wanted["CJ_DATABASE_URL"] = settings.database_url
    if settings.event_webhook_url and settings.event_webhook_url != REDACTED:
        wanted["CJ_EVENT_WEBHOOK_URL"] = settings.event_webhook_url
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_ray_head(dashboard_port: int = 8265) -> None:
    _node_env()
    ensure_auth_token()
    enable_token_auth()  # the head and this process agree (`ray start --head` applies the same rule)
    cmd = [ray_cli(), "start", "--head", "--disable-usage-stats", "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dashboard_port), "--include-dashboard", "true"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 and "already" not in (done.stderr + done.stdout):
        raise ConfigError(f"ray start failed: {done.stderr.strip().splitlines()[-1:]}")


def stop_ray_head() -> None:
    subprocess.run([ray_cli(), "stop", "--force"], capture_output=True, text=True)
