"""Helpers for stack tests: run a batch, query the database (each call on its own event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from cjcore.contracts import BatchResult
from cjcore.settings import Settings
from driver.api import CJClient
from storage.database import make_engine
from storage.repository import Repository


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
    async def go() -> Any:
        engine = make_engine(settings.database_url or "", pool_size=1)
        try:
            return await getattr(Repository(engine), method)(*args, **kw)
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

