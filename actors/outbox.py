"""OutboxPublisher (`cj-outbox`): delivers `cj_event_outbox` events at least once, off the batches' path.

Every `CJ_OUTBOX_POLL_S` it reads the unpublished events that are due. With `CJ_EVENT_WEBHOOK_URL` set,
each is POSTed as JSON with the event id as `Idempotency-Key` (and in the body), and marked published on
a 2xx; any other answer or no answer schedules the next attempt with the one backoff (1 s doubling, jittered,
at most 60 s). Without a webhook an event is published as soon as it is seen: the driver's `wait` reads
the event from the outbox itself. A crash between the POST and the mark means the event is sent again:
at least once, and receivers deduplicate by id. Batches never wait for this actor.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any

import ray

from cjcore.retry import backoff_s
from cjcore.settings import Settings
from storage.database import make_engine
from storage.outbox import OutboxStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
BATCH = 100


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class OutboxPublisher:
    async def __init__(self, settings: Settings):  # type: ignore[misc]  # Ray awaits async constructors
        assert settings.database_url
        import httpx  # only this actor needs it

        self._settings = settings
        self._repo = OutboxStore(make_engine(settings.database_url_value(), pool_size=2), settings.database_outage_s)
        self._url = settings.webhook_url_value()  # from the node's environment or a file: never an argument
        self._http = httpx.AsyncClient(timeout=settings.webhook_timeout_s) if self._url else None
        self.counts: Counter[str] = Counter()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stats(self) -> dict[str, Any]:
        return {"webhook": bool(self._url), **self.counts}

    async def publish_once(self) -> int:
        """One pass over the due events; returns how many were published."""
        events = await self._repo.due_events(BATCH)
        if not events:
            return 0
        if self._http is None:
            await self._repo.mark_published([e["id"] for e in events])
            self.counts["published"] += len(events)
            return len(events)
        sent = await asyncio.gather(*(self._post(e) for e in events))
        done = [e["id"] for e, ok in zip(events, sent, strict=True) if ok]
        await self._repo.mark_published(done)
        self.counts["published"] += len(done)
        return len(done)

    async def _post(self, event: dict[str, Any]) -> bool:
        import httpx

        assert self._http is not None and self._url is not None
        body = {"id": event["id"], "event_type": event["event_type"], "aggregate_id": event["aggregate_id"],
                "payload": event["payload"], "created_at": event["created_at"].isoformat()}
        try:
            response = await self._http.post(self._url, json=body, headers={"Idempotency-Key": event["id"]})
            if 200 <= response.status_code < 300:
                return True
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        # The system's one backoff (cjcore.retry.backoff_s), jittered: events failed together do not retry in step.
        retry_in = backoff_s(event["attempts"] + 1, 1.0, MAX_BACKOFF_S, random.uniform(0.5, 1.0))
        self.counts["webhook_failures"] += 1
        log.warning("outbox: event %s (%s, batch %s) not delivered: %s; next attempt in %gs",
                    event["id"], event["event_type"], event["aggregate_id"], error, retry_in)
        await self._repo.mark_delivery_failed(event["id"], error, retry_in)
        return False

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish_once()
            except Exception:  # a failed pass is retried next time; never kill the publisher
                log.exception("outbox publish pass failed")
            await asyncio.sleep(self._settings.outbox_poll_s)
