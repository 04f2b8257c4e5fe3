"""HTTP side of the simulated provider: `POST /v1/messages` in the real API's shape, `GET /stats`.

Rate limits are token buckets per minute with the real `anthropic-ratelimit-*` headers, and 429 with
`retry-after` past them. Faults (500, 529, hangs, malformed verdicts) are injected at given rates.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import random
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simprovider.judge import Judge, Truth, text_sha256
from simprovider.limits import Allowance
from simprovider.reading import FORCED_TOOL_OVERHEAD_TOKENS, essays_in, tool_name

CHARS_PER_TOKEN = 4
CACHE_TTL_S = 300.0
# The shortest prefix each model caches (Anthropic's docs); others default to 1,024.
MIN_CACHEABLE_TOKENS = {"claude-haiku-4-5": 4096, "claude-opus-4-5": 4096, "claude-opus-4-6": 4096,
                        "claude-haiku-3-5": 2048}


@dataclass
class SimConfig:
    noise: float = 0.0
    position_bias: float = 0.0
    rpm: int | None = None
    tpm: int | None = None  # input tokens per minute
    output_tpm: int | None = None
    latency_ms: float = 0.0
    error_rate: float = 0.0
    overload_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    max_tokens_rate: float = 0.0  # answers cut off with stop_reason "max_tokens"
    invalid_rate: float = 0.0  # 400 invalid_request_error
    auth_error_rate: float = 0.0  # 401 authentication_error
    hang_s: float = 600.0  # how long a simulated timeout hangs before answering
    batch_delay_s: float = 0.0  # a Message Batch ends no sooner than this after it was created
    batch_api_overload_rate: float = 0.0  # Message Batch create/retrieve/results/cancel answered 529 at this rate
    batch_create_lost_rate: float = 0.0  # a create accepted (the batch runs, is billed) but its answer lost
    garbage_rate: float = 0.0  # a Messages call answered 200 with a body that is not JSON (a proxy's page)
    initial_s: float = 60.0  # seconds' worth in each bucket at start: 60 is a full bucket (a rested key)
    min_cacheable_tokens: int | None = None  # None: the model's own minimum (MIN_CACHEABLE_TOKENS)
    seed: int | None = None
    truth: Truth = field(default_factory=dict)  # sha256 → quality, or {"quality": q, "noise": x}


# Injected faults in the order their rates are laid out on [0, 1): (name, SimConfig attribute).
FAULTS = (("auth_error", "auth_error_rate"), ("invalid", "invalid_rate"), ("server_error", "error_rate"),
          ("overload", "overload_rate"), ("timeout", "timeout_rate"), ("max_tokens", "max_tokens_rate"),
          ("malformed", "malformed_rate"), ("garbage", "garbage_rate"))


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


MAX_KEPT_BATCHES = 10_000  # Message Batches whose results stay retrievable
MAX_KEPT = 1_000_000  # arrivals, refusals, admissions, correlation ids and cached prefixes kept, at most


@dataclass(slots=True)
class _Params:
    system_text: str
    user_text: str
    essays: tuple[str, str] | None
    model: str
    max_tokens: int
    cached_prefix: bool
    correlation_id: str | None = None
    tool: str = "verdict"  # the tool the answer must call (the request's)


_ids = itertools.count()
_ID_PREFIX = uuid.uuid4().hex[:12]  # per process, so ids of two runs differ


def _new_id(kind: str) -> str:
    """Unique ids in the API's shapes; a counter, since uuid4 per answer was a tenth of the server's CPU."""
    return f"{kind}_{_ID_PREFIX}{next(_ids):012x}"


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _error(status: int, kind: str, message: str, headers: dict[str, str]) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers)


class SimProvider:
    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self._rng = random.Random(self.config.seed)
        self._judge = Judge(self.config.truth, self.config.noise, self.config.position_bias, self._rng)
        self._cache: dict[str, float] = {}  # sha of cached prefix → expiry (monotonic)
        self._buckets: dict[str, Allowance] = {}
        self.reset_stats()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None

    # -- configuration and stats -------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change behaviour between tests (the server keeps running)."""
        for k, v in changes.items():
            if not hasattr(self.config, k):
                raise AttributeError(k)
            setattr(self.config, k, v)
        self._judge = Judge(self.config.truth, self.config.noise, self.config.position_bias, self._rng)
        self._buckets.clear()

    def start_limits(self) -> None:
        """Start the rate-limit buckets now, holding `initial_s` seconds' worth, rather than at the first request
        (a test whose client starts its own bucket earlier than the server's first request compares like with
        like)."""
        now = time.monotonic()
        for name, limit in (("requests", self.config.rpm), ("input", self.config.tpm),
                            ("output", self.config.output_tpm)):
            self._bucket(name, limit, now)

    def reset_stats(self) -> None:
        # Bounded: the simulator serves load tests of millions of requests (the latest MAX_KEPT of each).
        self.arrivals: deque[float] = deque(maxlen=MAX_KEPT)  # monotonic time of each request, for rate checks
        self.refusals: deque[float] = deque(maxlen=MAX_KEPT)  # monotonic time of each 429
        self.admissions: deque[tuple[float, int]] = deque(maxlen=MAX_KEPT)  # (time, input tokens charged)
        self.request_shapes: Counter[tuple[str, int]] = Counter()  # (model, max_tokens) of each valid request
        self.correlation_ids: Counter[str] = Counter()  # from metadata.user_id "cj:<correlation id>:<sha>"
        self.key_fingerprints: set[str] = set()  # sha256[:16] of each API key presented (never the key)
        self.stats: dict[str, Any] = {
            "requests": 0, "ok": 0, "rate_limited": 0, "overloaded": 0, "server_errors": 0, "malformed": 0,
            "timeouts": 0, "bad_requests": 0, "auth_errors": 0, "max_tokens": 0, "input_tokens": 0, "output_tokens": 0,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "a_wins": 0, "b_wins": 0,
            "charged_input_tokens": 0,  # what the input tokens/min bucket was charged
            "first_request_at": None, "last_request_at": None, "batches": 0, "largest_batch": 0,
            "batches_created": 0, "batches_cancelled": 0, "batch_api_calls": 0, "batch_api_overloaded": 0,
            "garbage": 0, "batch_creates_lost": 0,
        }
        self._batches: OrderedDict[str, dict[str, Any]] = OrderedDict()  # Message Batches, oldest first
        self._evicted_billed = 0  # billed items of Message Batches no longer kept
        self._evicted_unread = 0

    # -- rate limits --------------------------------------------------------------------------------

    def _bucket(self, name: str, limit: int | None, now: float) -> Allowance | None:
        if limit is None:
            return None
        b = self._buckets.get(name)
        if b is None or b.limit != limit:
            b = self._buckets[name] = Allowance.starting_with(limit, self.config.initial_s, now)
        return b

    def _limit_headers(self, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        wall = time.time()
        for name, limit, prefixes in (
            ("requests", self.config.rpm, ("requests",)),
            ("input", self.config.tpm, ("input-tokens", "tokens")),
            ("output", self.config.output_tpm, ("output-tokens",)),
        ):
            b = self._bucket(name, limit, now)
            if b is None:
                continue
            for p in prefixes:
                headers[f"anthropic-ratelimit-{p}-limit"] = str(limit)
                headers[f"anthropic-ratelimit-{p}-remaining"] = str(max(0, int(b.left(now))))
                headers[f"anthropic-ratelimit-{p}-reset"] = _rfc3339(wall + b.seconds_to_full(now))
        return headers

    def _admit(self, input_tokens: int, now: float) -> float:
        """0.0 if the request fits every bucket (and is charged to each), else seconds to wait."""
        charges = [
            (b, amount)
            for b, amount in (
                (self._bucket("requests", self.config.rpm, now), 1.0),
                (self._bucket("input", self.config.tpm, now), float(input_tokens)),
                (self._bucket("output", self.config.output_tpm, now), 1.0),  # some allowance left; charged after
            )
            if b is not None
        ]
        wait = max((b.wait_for(amount, now) for b, amount in charges), default=0.0)
        if wait == 0.0:
            for b, amount in charges:
                b.charge(min(amount, b.limit), now)
        return wait

    def _fault(self, roll: float) -> str | None:
        """The fault this request meets, if any: one draw in [0, 1) against the rates laid end to end."""
        for name, attr in FAULTS:
            rate = getattr(self.config, attr)
            if roll < rate:
                return name
            roll -= rate
        return None

    # -- the API ------------------------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.Response:  # noqa: C901 - the API's cases, in its order
        now = time.monotonic()
        wall = time.time()
        st = self.stats
        st["requests"] += 1
        self.arrivals.append(now)
        st["first_request_at"] = st["first_request_at"] or wall
        st["last_request_at"] = wall
        request_id = _new_id("req_sim")
        if not self._authorized(request):
            return _error(401, "authentication_error", "missing x-api-key", {"request-id": request_id})
        try:
            req = self._read(await request.json())
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            st["bad_requests"] += 1
            return _error(400, "invalid_request_error", "malformed request body", {"request-id": request_id})
        if req.essays is None:
            st["bad_requests"] += 1
            return _error(400, "invalid_request_error", "no essays found in the user turn",
                          {"request-id": request_id})
        system_text, user_text, essays, model = req.system_text, req.user_text, req.essays, req.model
        cached_prefix, max_tokens = req.cached_prefix, req.max_tokens

        system_tokens = estimate_tokens(system_text) + FORCED_TOOL_OVERHEAD_TOKENS + 50  # + tool definition
        input_tokens = system_tokens + estimate_tokens(user_text)
        cfg = self.config
        # Prompt caching, accounted like the real API: the marked prefix is written once, then read;
        # cache reads do not count towards input tokens/min, cache writes do.
        cache_key = text_sha256(model + "\x00" + system_text)
        minimum = cfg.min_cacheable_tokens or MIN_CACHEABLE_TOKENS.get(model, 1024)
        cacheable = cached_prefix and system_tokens >= minimum
        cache_hit = cacheable and self._cache.get(cache_key, 0.0) > now
        charge = input_tokens - (system_tokens if cache_hit else 0)
        wait = self._admit(charge, now)
        headers = {"request-id": request_id, **self._limit_headers(now)}
        if wait > 0:
            st["rate_limited"] += 1
            self.refusals.append(now)
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            return _error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", headers)

        st["charged_input_tokens"] += charge
        self.admissions.append((now, charge))
        fault = self._fault(self._rng.random())
        if fault == "auth_error":
            st["auth_errors"] += 1
            return _error(401, "authentication_error", "invalid x-api-key", headers)
        if fault == "invalid":
            st["bad_requests"] += 1
            return _error(400, "invalid_request_error", "messages: invalid request", headers)
        if cfg.latency_ms > 0:
            await asyncio.sleep(self._rng.expovariate(1000.0 / cfg.latency_ms))
        if fault == "server_error":
            st["server_errors"] += 1
            return _error(500, "api_error", "Internal server error", headers)
        if fault == "overload":
            st["overloaded"] += 1
            headers["retry-after"] = "1"
            return _error(529, "overloaded_error", "Overloaded", headers)
        if fault == "timeout":
            st["timeouts"] += 1
            await asyncio.sleep(cfg.hang_s)
            return _error(504, "timeout_error", "Request timed out", headers)
        if fault == "garbage":
            st["garbage"] += 1
            return web.Response(status=200, text="<html><body>502 Bad Gateway (proxy)</body></html>",
                                content_type="text/html", headers=headers)

        cache_read = system_tokens if cache_hit else 0
        cache_write = system_tokens if cacheable and not cache_hit else 0
        if cacheable:
            if len(self._cache) >= MAX_KEPT:  # forget expired prefixes rather than keep every one ever seen
                self._cache = {k: t for k, t in self._cache.items() if t > now}
            self._cache[cache_key] = now + CACHE_TTL_S
        billed_input = input_tokens - cache_read - cache_write

        content, stop_reason = self._content(essays, fault, req.correlation_id, req.tool)
        output_tokens = self._output_tokens(max_tokens)
        st["input_tokens"] += billed_input
        st["cache_read_input_tokens"] += cache_read
        st["cache_creation_input_tokens"] += cache_write
        return web.json_response(
            self._message(model, content, stop_reason, billed_input, output_tokens, cache_write, cache_read),
            headers=headers,
        )

    # -- shared by the Messages and Message Batches endpoints -------------------------------------------

    def _read(self, body: dict[str, Any]) -> _Params:
        """The parts of a Messages request body the judge needs (raises on a malformed body)."""
        system = body.get("system")
        system_text = "".join(b.get("text", "") for b in system if isinstance(b, dict)) \
            if isinstance(system, list) else str(system or "")
        cached_prefix = isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control")
                                                         for b in system)
        user = body["messages"][-1]["content"]
        user_text = user if isinstance(user, str) else "".join(b.get("text", "") for b in user)
        user_id = str((body.get("metadata") or {}).get("user_id", ""))
        cid = user_id.split(":")[1] if user_id.startswith("cj:") else None
        params = _Params(system_text, user_text, essays_in(user_text), str(body["model"]),
                         int(body["max_tokens"]), cached_prefix, cid, tool_name(body))
        self.request_shapes[(params.model, params.max_tokens)] += 1
        if cid is not None and (cid in self.correlation_ids or len(self.correlation_ids) < MAX_KEPT):
            self.correlation_ids[cid] += 1
        return params

    def _verdict_rng(self, correlation_id: str | None) -> random.Random | None:
        """With --seed, each verdict's own generator, from the seed and the request's correlation id: a run's
        verdicts do not depend on the order in which requests arrive (DESIGN §4.5)."""
        if self.config.seed is None or correlation_id is None:
            return None
        return random.Random(f"{self.config.seed}:{correlation_id}")

    def _content(self, essays: tuple[str, str], fault: str | None, correlation_id: str | None = None,
                 tool: str = "verdict") -> tuple[list[dict[str, Any]], str]:
        """The answer's content blocks and stop reason: a verdict, or the injected cut-off or malformed one."""
        st = self.stats
        a_wins, _ = self._judge.a_wins(*essays, rng=self._verdict_rng(correlation_id))
        if fault == "max_tokens":
            st["max_tokens"] += 1
            return [{"type": "text", "text": "Essay A develops its argument more"}], "max_tokens"
        if fault == "malformed":
            st["malformed"] += 1
            if self._rng.random() < 0.5:
                return [{"type": "text", "text": "Both essays have merits; I cannot decide."}], "end_turn"
            return [{"type": "tool_use", "id": _new_id("toolu"), "name": tool,
                     "input": {"winner": "C", "confidence": "high"}}], "tool_use"
        st["ok"] += 1
        st["a_wins" if a_wins else "b_wins"] += 1
        return [{
            "type": "tool_use", "id": _new_id("toolu"), "name": tool,
            "input": {"winner": "A" if a_wins else "B", "confidence": 4,
                      "justification": "Clearer argument and more accurate language."},
        }], "tool_use"

    def _output_tokens(self, max_tokens: int) -> int:
        output_tokens = min(max_tokens, 40 + self._rng.randint(0, 20))
        out_bucket = self._bucket("output", self.config.output_tpm, time.monotonic())
        if out_bucket is not None:  # output tokens/min counts what was generated
            out_bucket.charge(output_tokens, time.monotonic())
        self.stats["output_tokens"] += output_tokens
        return output_tokens

    @staticmethod
    def _message(model: str, content: list[dict[str, Any]], stop_reason: str, input_tokens: int,
                 output_tokens: int, cache_write: int = 0, cache_read: int = 0) -> dict[str, Any]:
        return {
            "id": _new_id("msg_sim"), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read},
        }

    # -- Message Batches ---------------------------------------------------------------------------------
    # Like the real API, batches have limits of their own: the Messages requests/tokens per minute buckets
    # do not apply. Every request is judged at creation; the batch "ends" `latency_ms` later.

    def _batch_item(self, item: dict[str, Any]) -> dict[str, Any]:
        st = self.stats
        now = time.time()
        st["requests"] += 1
        st["first_request_at"] = st["first_request_at"] or now
        st["last_request_at"] = now
        custom_id = str(item.get("custom_id", ""))

        def errored(kind: str, message: str) -> dict[str, Any]:
            return {"custom_id": custom_id, "result": {"type": "errored", "error": {
                "type": "error", "error": {"type": kind, "message": message}}}}

        try:
            req = self._read(item["params"])
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            st["bad_requests"] += 1
            return errored("invalid_request_error", "malformed request params")
        if req.essays is None:
            st["bad_requests"] += 1
            return errored("invalid_request_error", "no essays found in the user turn")
        fault = self._fault(self._rng.random())
        if fault in ("auth_error", "invalid", "server_error", "overload"):
            kind = {"auth_error": "authentication_error", "invalid": "invalid_request_error",
                    "server_error": "api_error", "overload": "overloaded_error"}[fault]
            st[{"auth_error": "auth_errors", "invalid": "bad_requests", "server_error": "server_errors",
                "overload": "overloaded"}[fault]] += 1
            return errored(kind, "simulated fault")
        if fault == "timeout":
            st["timeouts"] += 1
            return {"custom_id": custom_id, "result": {"type": "expired"}}
        content, stop_reason = self._content(req.essays, fault, req.correlation_id, req.tool)
        input_tokens = estimate_tokens(req.system_text) + FORCED_TOOL_OVERHEAD_TOKENS + 50 \
            + estimate_tokens(req.user_text)
        st["input_tokens"] += input_tokens
        message = self._message(req.model, content, stop_reason, input_tokens, self._output_tokens(req.max_tokens))
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}

    def _batch_object(self, batch_id: str, base_url: str) -> dict[str, Any]:
        b = self._batches[batch_id]
        ended = time.time() >= b["ends_at"]
        counts = {"processing": 0 if ended else len(b["lines"]), "succeeded": 0, "errored": 0, "canceled": 0,
                  "expired": 0}
        if ended:
            counts.update(b["counts"])
        return {
            "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts, "created_at": _rfc3339(b["created_at"]),
            "ended_at": _rfc3339(b["ends_at"]) if ended else None,
            "expires_at": _rfc3339(b["created_at"] + 86400), "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def _authorized(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if key:
            self.key_fingerprints.add(hashlib.sha256(key.encode()).hexdigest()[:16])
        return bool(key)

    def _batch_api_fault(self) -> web.Response | None:
        """Every Message Batches endpoint call is counted; some are refused with 529 (`--batch-api-overload-rate`)."""
        self.stats["batch_api_calls"] += 1
        if self._rng.random() < self.config.batch_api_overload_rate:
            self.stats["batch_api_overloaded"] += 1
            return _error(529, "overloaded_error", "simulated overload", {"retry-after": "1"})
        return None

    async def create_batch(self, request: web.Request) -> web.Response:
        request_id = _new_id("req_sim")
        if not self._authorized(request):
            return _error(401, "authentication_error", "missing x-api-key", {"request-id": request_id})
        if (fault := self._batch_api_fault()) is not None:
            return fault
        try:
            items = (await request.json())["requests"]
            assert isinstance(items, list) and items and all(isinstance(i, dict) for i in items)
        except (ValueError, KeyError, TypeError, AssertionError):
            self.stats["bad_requests"] += 1
            return _error(400, "invalid_request_error", "requests: a non-empty list is required",
                          {"request-id": request_id})
        self.stats["batches"] += 1
        self.stats["batches_created"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        lines = [self._batch_item(item) for item in items]
        created = time.time()
        batch_id = _new_id("msgbatch_sim")
        self._batches[batch_id] = {
            "lines": lines, "created_at": created,
            "ends_at": created + max(self.config.latency_ms / 1000.0, self.config.batch_delay_s),
            "counts": Counter(line["result"]["type"] for line in lines), "cancelled": False, "read": False,
        }
        while len(self._batches) > MAX_KEPT_BATCHES:
            _, old = self._batches.popitem(last=False)
            self._evicted_billed += old["counts"]["succeeded"]
            self._evicted_unread += self._unread(old, time.time())
        if self._rng.random() < self.config.batch_create_lost_rate:
            # Accepted, running and billed, but the answer never arrives: the connection closes first.
            self.stats["batch_creates_lost"] += 1
            if request.transport is not None:
                request.transport.close()
        return web.json_response(self._batch_object(batch_id, _base_url(request)), headers={"request-id": request_id})

    @staticmethod
    def _unread(b: dict[str, Any], now: float) -> bool:
        return now >= b["ends_at"] and not b["cancelled"] and not b["read"]

    async def list_batches(self, request: web.Request) -> web.Response:
        """Newest first, paginated by `after_id` (older than that id) and `limit` (1–1000, default 20), in the
        real API's page shape."""
        if (fault := self._batch_api_fault()) is not None:
            return fault
        try:
            limit = min(1000, max(1, int(request.query.get("limit", "20"))))
        except ValueError:
            return _error(400, "invalid_request_error", "limit: an integer is required", {})
        ids = list(reversed(self._batches))
        after = request.query.get("after_id")
        if after:
            ids = ids[ids.index(after) + 1:] if after in self._batches else []
        page = ids[:limit]
        base = _base_url(request)
        return web.json_response({"data": [self._batch_object(i, base) for i in page], "has_more": len(ids) > limit,
                                  "first_id": page[0] if page else None, "last_id": page[-1] if page else None})

    async def get_batch(self, request: web.Request) -> web.Response:
        if (fault := self._batch_api_fault()) is not None:
            return fault
        batch_id = request.match_info["batch_id"]
        if batch_id not in self._batches:
            return _error(404, "not_found_error", f"no message batch {batch_id}", {})
        return web.json_response(self._batch_object(batch_id, _base_url(request)))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        """Like the real API: what had not finished ends `canceled`; the batch ends (here at once)."""
        if (fault := self._batch_api_fault()) is not None:
            return fault
        batch_id = request.match_info["batch_id"]
        b = self._batches.get(batch_id)
        if b is None:
            return _error(404, "not_found_error", f"no message batch {batch_id}", {})
        if time.time() < b["ends_at"]:
            self.stats["batches_cancelled"] += 1
            b["cancelled"] = True
            b["lines"] = [{"custom_id": line["custom_id"], "result": {"type": "canceled"}} for line in b["lines"]]
            b["counts"] = Counter(canceled=len(b["lines"]))
            b["ends_at"] = time.time()
        return web.json_response(self._batch_object(batch_id, _base_url(request)))

    async def batch_results(self, request: web.Request) -> web.Response:
        if (fault := self._batch_api_fault()) is not None:
            return fault
        batch_id = request.match_info["batch_id"]
        b = self._batches.get(batch_id)
        if b is None or time.time() < b["ends_at"]:
            return _error(404, "not_found_error", f"no results for message batch {batch_id}", {})
        b["read"] = True
        body = "\n".join(json.dumps(line) for line in b["lines"]) + "\n"
        return web.Response(body=body.encode(), content_type="application/binary")

    def batch_stats(self) -> dict[str, int]:
        """What the provider bills of Message Batches (items that ended `succeeded`) and how many ended
        batches, not cancelled, were never read."""
        now = time.time()
        ended = [b for b in self._batches.values() if now >= b["ends_at"]]
        return {"batch_items_billed": self._evicted_billed + sum(b["counts"]["succeeded"] for b in ended),
                "batches_unread": self._evicted_unread + sum(self._unread(b, now) for b in ended)}

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.stats, **self.batch_stats()})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/batches", self.create_batch)
        app.router.add_get("/v1/messages/batches", self.list_batches)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.get_batch)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self.cancel_batch)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.batch_results)
        app.router.add_get("/stats", self.get_stats)
        return app

    # -- running --------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a background thread (tests, demo); returns the base URL."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start(host, port))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="sim-provider", daemon=True)
        self._thread.start()
        ready.wait(10)
        return f"http://{host}:{self.port}"

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
