"""HTTP side of the simulated provider: `POST /v1/messages` in the real API's shape, `GET /stats`.

Rate limits are token buckets per minute with the real `anthropic-ratelimit-*` headers, and 429 with
`retry-after` past them. Faults (500, 529, hangs, malformed verdicts) are injected at given rates.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cjcore.prompt import TOOL_NAME, extract_essays
from cjcore.rate_limit import TOOL_USE_OVERHEAD_TOKENS
from cjcore.token_bucket import TokenBucket
from simprovider.judge import Judge, text_sha256

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
    initial_s: float = 60.0  # seconds' worth in each bucket at start: 60 is a full bucket (a rested key)
    min_cacheable_tokens: int | None = None  # None: the model's own minimum (MIN_CACHEABLE_TOKENS)
    seed: int | None = None
    truth: dict[str, float] = field(default_factory=dict)


# Injected faults in the order their rates are laid out on [0, 1): (name, SimConfig attribute).
FAULTS = (("auth_error", "auth_error_rate"), ("invalid", "invalid_rate"), ("server_error", "error_rate"),
          ("overload", "overload_rate"), ("timeout", "timeout_rate"), ("max_tokens", "max_tokens_rate"),
          ("malformed", "malformed_rate"))


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, kind: str, message: str, headers: dict[str, str]) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers=headers)


class SimProvider:
    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self._rng = random.Random(self.config.seed)
        self._judge = Judge(self.config.truth, self.config.noise, self.config.position_bias, self._rng)
        self._cache: dict[str, float] = {}  # sha of cached prefix → expiry (monotonic)
        self._buckets: dict[str, TokenBucket] = {}
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

    def reset_stats(self) -> None:
        self.arrivals: list[float] = []  # monotonic time of every request, for rate checks in tests
        self.refusals: list[float] = []  # monotonic time of every 429
        self.admissions: list[tuple[float, int]] = []  # (monotonic time, input tokens charged) of each admitted
        self.request_shapes: Counter[tuple[str, int]] = Counter()  # (model, max_tokens) of each valid request
        self.correlation_ids: Counter[str] = Counter()  # from metadata.user_id "cj:<correlation id>:<sha>"
        self.stats: dict[str, Any] = {
            "requests": 0, "ok": 0, "rate_limited": 0, "overloaded": 0, "server_errors": 0, "malformed": 0,
            "timeouts": 0, "bad_requests": 0, "auth_errors": 0, "max_tokens": 0, "input_tokens": 0, "output_tokens": 0,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "a_wins": 0, "b_wins": 0,
            "charged_input_tokens": 0,  # what the input tokens/min bucket was charged
            "first_request_at": None, "last_request_at": None,
        }

    # -- rate limits --------------------------------------------------------------------------------

    def _bucket(self, name: str, limit: int | None, now: float) -> TokenBucket | None:
        if limit is None:
            return None
        b = self._buckets.get(name)
        if b is None or b.capacity != limit:
            b = self._buckets[name] = TokenBucket.per_minute(limit, now)
            b.level = min(b.capacity, limit / 60.0 * self.config.initial_s)
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
                headers[f"anthropic-ratelimit-{p}-remaining"] = str(int(b.available(now)))
                headers[f"anthropic-ratelimit-{p}-reset"] = _rfc3339(wall + b.seconds_until_full(now))
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
                b.try_take(amount, now)
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

    async def messages(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        wall = time.time()
        st = self.stats
        st["requests"] += 1
        self.arrivals.append(now)
        st["first_request_at"] = st["first_request_at"] or wall
        st["last_request_at"] = wall
        request_id = f"req_sim_{uuid.uuid4().hex[:24]}"
        if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
            return _error(401, "authentication_error", "missing x-api-key", {"request-id": request_id})
        try:
            body = await request.json()
            system_text = "".join(b.get("text", "") for b in body.get("system", []) if isinstance(b, dict)) \
                if isinstance(body.get("system"), list) else str(body.get("system") or "")
            cached_prefix = isinstance(body.get("system"), list) and any(
                isinstance(b, dict) and b.get("cache_control") for b in body["system"]
            )
            user = body["messages"][-1]["content"]
            user_text = user if isinstance(user, str) else "".join(b.get("text", "") for b in user)
            essays = extract_essays(user_text)
            max_tokens = int(body["max_tokens"])
            model = str(body["model"])
            self.request_shapes[(model, max_tokens)] += 1
            user_id = str((body.get("metadata") or {}).get("user_id", ""))
            if user_id.startswith("cj:"):
                self.correlation_ids[user_id.split(":")[1]] += 1
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            st["bad_requests"] += 1
            return _error(400, "invalid_request_error", "malformed request body", {"request-id": request_id})
        if essays is None:
            st["bad_requests"] += 1
            return _error(400, "invalid_request_error", "no essays found in the user turn",
                          {"request-id": request_id})

        system_tokens = estimate_tokens(system_text) + TOOL_USE_OVERHEAD_TOKENS + 50  # + tool definition
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

        cache_read = system_tokens if cache_hit else 0
        cache_write = system_tokens if cacheable and not cache_hit else 0
        if cacheable:
            self._cache[cache_key] = now + CACHE_TTL_S
        billed_input = input_tokens - cache_read - cache_write

        a_wins, _ = self._judge.a_wins(*essays)
        content: list[dict[str, Any]]
        if fault == "max_tokens":
            st["max_tokens"] += 1
            content = [{"type": "text", "text": "Essay A develops its argument more"}]
            stop_reason = "max_tokens"
        elif fault == "malformed":
            st["malformed"] += 1
            content = (
                [{"type": "text", "text": "Both essays have merits; I cannot decide."}]
                if self._rng.random() < 0.5
                else [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": TOOL_NAME,
                       "input": {"winner": "C", "confidence": "high"}}]
            )
            stop_reason = "end_turn" if content[0]["type"] == "text" else "tool_use"
        else:
            st["ok"] += 1
            st["a_wins" if a_wins else "b_wins"] += 1
            content = [{
                "type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": TOOL_NAME,
                "input": {"winner": "A" if a_wins else "B", "confidence": 4,
                          "justification": "Clearer argument and more accurate language."},
            }]
            stop_reason = "tool_use"
        output_tokens = min(max_tokens, 40 + self._rng.randint(0, 20))
        out_bucket = self._bucket("output", cfg.output_tpm, time.monotonic())
        if out_bucket is not None:  # output tokens/min counts what was generated
            out_bucket.available(time.monotonic())
            out_bucket.level -= output_tokens
        st["input_tokens"] += billed_input
        st["output_tokens"] += output_tokens
        st["cache_read_input_tokens"] += cache_read
        st["cache_creation_input_tokens"] += cache_write
        return web.json_response(
            {
                "id": f"msg_sim_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": billed_input, "output_tokens": output_tokens,
                          "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read},
            },
            headers=headers,
        )

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
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
