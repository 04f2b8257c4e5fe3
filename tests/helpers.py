"""Helpers for stack tests: run a batch, query the database (each call on its own event loop)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy import text

from cjcore.contracts import BatchResult
from cjcore.settings import Settings
from driver.api import CJClient
from storage.batch_writes import BatchWrites
from storage.database import make_engine
from storage.metrics import MetricsQueries
from storage.read_models import ReadModels
from storage.supervision import SupervisionQueries


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (e.g. a PostgreSQL data directory)."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def host_of(settings: Settings, batch_id: str) -> Any:
    """The coordinator host a batch's messages go to (the tests' deployments fix the host count)."""

    from actors.activation import host_for

    return host_for(batch_id, settings)


def run_batch(settings: Settings, request: dict[str, Any], timeout_s: float = 180) -> BatchResult:
    async def go() -> BatchResult:
        async with CJClient(settings) as client:
            batch_id = await client.submit(request)
            return await client.wait(batch_id, timeout_s=timeout_s, poll_s=0.05)

    return asyncio.run(go())


def sql(settings: Settings, query: str, **params: Any) -> list[Any]:
    async def go() -> list[Any]:
        engine = make_engine(settings.database_url or "", pool_size=1)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(query), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(go())


def repo_call(settings: Settings, method: str, *args: Any, **kw: Any) -> Any:
    """One storage call by name, from whichever store has it (reads, invariant checks, writes)."""
    async def go() -> Any:
        engine = make_engine(settings.database_url or "", pool_size=1)
        stores = (ReadModels, MetricsQueries, BatchWrites, SupervisionQueries)
        store = next(s(engine) for s in stores if hasattr(s, method))
        try:
            return await getattr(store, method)(*args, **kw)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def essays(n: int, prefix: str = "e", anchors: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """n distinct essays; `anchors` maps essay_id → known grade."""
    anchors = anchors or {}
    out = []
    for i in range(n):
        eid = f"{prefix}{i:02d}"
        e: dict[str, Any] = {"essay_id": eid, "text": f"Essay {eid}: " + "words " * (5 + i)}
        if eid in anchors:
            e.update(is_anchor=True, known_grade=anchors[eid])
        out.append(e)
    return out


def run_batches(settings: Settings, requests: list[dict[str, Any]], timeout_s: float = 240) -> list[BatchResult]:
    """Submit every request at once, then wait for all of them."""
    async def go() -> list[BatchResult]:
        async with CJClient(settings) as client:
            ids = await asyncio.gather(*(client.submit(r) for r in requests))
            return list(await asyncio.gather(*(client.wait(b, timeout_s=timeout_s, poll_s=0.1) for b in ids)))

    return asyncio.run(go())



def submit(settings: Settings, request: dict[str, Any]) -> str:
    async def go() -> str:
        async with CJClient(settings) as client:
            return await client.submit(request)

    return asyncio.run(go())


def submit_many(settings: Settings, requests: list[dict[str, Any]]) -> list[str]:
    async def go() -> list[str]:
        async with CJClient(settings) as client:
            return list(await asyncio.gather(*(client.submit(r) for r in requests)))

    return asyncio.run(go())


def wait_for(settings: Settings, batch_id: str, timeout_s: float = 180) -> BatchResult:
    async def go() -> BatchResult:
        async with CJClient(settings) as client:
            return await client.wait(batch_id, timeout_s=timeout_s, poll_s=0.05)

    return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll a condition (synchronisation on observed state, not a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def in_flight(settings: Settings, batch_id: str) -> list[Any]:
    return sql(settings, "SELECT correlation_id FROM cj_comparison_pairs WHERE batch_id = :b AND winner IS NULL",
               b=batch_id)


class WebhookReceiver:
    """A webhook endpoint in a thread: records every POST; answers 503 to the first `fail_first`
    deliveries of each event id."""

    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.posts: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text())
        self.posts.append({"key": request.headers.get("Idempotency-Key"), **body})
        if sum(p["id"] == body["id"] for p in self.posts) <= self.fail_first:
            return web.Response(status=503)
        return web.Response(status=204)

    def start(self) -> str:
        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/events", self._handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}/events"
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
