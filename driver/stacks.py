"""Where a command's deployment is: a local stack in this process (`demo`, `bench`, `loadtest`), a scratch
state directory for measurements, or the running deployment (`up`) found by file, URL or address."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from cjcore.errors import ConfigError
from cjcore.settings import Settings
from driver.runtime import (
    init_ray,
    read_deployment,
    resolve_database,
)
from simprovider.server import SimConfig, SimProvider


@contextlib.contextmanager
def local_stack(settings: Settings, sim_config: SimConfig) -> Iterator[tuple[Settings, SimProvider]]:
    """Everything in this process: simulated provider, embedded (or given) PostgreSQL, a fresh local Ray
    and the actor pools. Used by `demo` and `bench`."""
    import ray

    from actors.deployment import deploy

    sim = SimProvider(sim_config)
    settings = settings.model_copy(update={"provider_base_url": sim.start_in_thread()})
    settings = resolve_database(settings)
    init_ray(settings, local=True)
    try:
        deploy(settings)
        yield settings, sim
    finally:
        ray.shutdown()
        sim.stop_thread()


def scratch_settings(settings: Settings) -> Settings:
    """`loadtest` and `bench` on a local stack measure from a clean slate: with the embedded database they
    use a scratch data directory, emptied first, so unfinished batches of an earlier interrupted run (which
    the Supervisor would resume) neither add load nor mix with the figures."""
    if settings.database_url is not None:
        return settings
    import shutil

    from storage.database import embedded_pgdata, stop_embedded

    scratch = settings.state_dir / "scratch"
    stop_embedded(embedded_pgdata(scratch))
    shutil.rmtree(scratch, ignore_errors=True)
    return settings.model_copy(update={"state_dir": scratch})


def deployment_settings(settings: Settings) -> Settings:
    """Settings of the running deployment (`up`), for submit/status/cancel/inspect/loadtest processes:
    CJ_DATABASE_URL as given, else this machine's deployment file, else (with --address / CJ_RAY_ADDRESS)
    what the deployment's Supervisor publishes."""
    if settings.database_url is not None:
        return settings
    dep = read_deployment(settings)
    if dep is not None:
        public = dep["settings"]
    elif settings.ray_address is not None:
        public = _published_settings(settings)
    else:
        raise ConfigError("no deployment: run `python launch.py up` first, or give --address / CJ_DATABASE_URL")
    if "***" in (public.get("database_url") or ""):
        raise ConfigError("CJ_DATABASE_URL: the deployment's database URL has a password, which is never written "
                          "down or published; export CJ_DATABASE_URL=… (with the password) for this command")
    merged = {**public, "anthropic_api_key": settings.anthropic_api_key}
    if settings.ray_address is not None:
        merged["ray_address"] = settings.ray_address
    return Settings.model_validate(merged)


def _published_settings(settings: Settings) -> dict[str, Any]:
    import ray

    from actors import names

    init_ray(settings, local=False)
    try:
        supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    except ValueError:
        raise ConfigError(f"--address {settings.ray_address}: no deployment in Ray namespace "
                          f"{settings.ray_namespace!r}; run `python launch.py up --address …` there first") from None
    return dict(ray.get(supervisor.deployment_settings.remote(), timeout=30))
