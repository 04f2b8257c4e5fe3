"""The provider pool's rate limit, as one set of continuously refilled buckets per API key and model.

Before a request is sent it must fit three buckets: requests, input tokens (an estimate from the prompt)
and output tokens (an estimate from recent answers). After the answer, `settle` replaces the estimates
with the true usage. Every response's `anthropic-ratelimit-*` headers teach the limits (a key whose tier
differs from the configuration converges to the real limit) and lower our level to the server's
`remaining` when the server has seen more than we have. A 429 (our key is over its limit) pauses the whole
pool for `retry-after`; a 529 (the provider overloaded) does so only when most recent answers are 529s, since
a sporadic one says nothing of the next call and is retried on its own after its `retry-after`. A pause counts
once per episode: the answers to requests granted before it began say nothing new and do not extend it. Time
is passed in.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cjcore.token_bucket import TokenBucket

# Anthropic's published limits at its highest standard tier (requests/min, input and output tokens/min).
# A configured limit above these is almost certainly a typo; a custom tier can still be taught by headers.
MAX_KNOWN_TIER = {"requests": 4_000, "input_tokens": 4_000_000, "output_tokens": 800_000}

# Header prefix → bucket. `tokens-*` is the combined legacy header; we read it as input tokens.
_HEADER_BUCKETS = {"requests": "requests", "input-tokens": "input_tokens", "output-tokens": "output_tokens",
                   "tokens": "input_tokens"}

# Anthropic adds a tool-use system prompt of ~346 tokens when tool_choice forces a tool (its docs' table).
TOOL_USE_OVERHEAD_TOKENS = 346
CHARS_PER_TOKEN = 3.5  # a first guess; the true ratio is learned from usage (PoolLimiter.input_ratio)
INPUT_MARGIN = 1.02  # learned estimates are means: keep 2% headroom
# Buckets hold a minute's worth, like the provider's. Until a response has told us the server's
# `remaining`, we hold at most one second's worth: we do not know what else has drawn on the key, so we
# do not burst blind (and sharp ramps meet the provider's acceleration limits). A restarted limiter starts
# with nothing and refills from there: its predecessor may have just spent the server's allowance.
START_ALLOWANCE_S = 1.0
# A 529 pauses the pool when at least this share of the answers of the last OVERLOAD_WINDOW_S were 529s: an
# overload that goes on. Sporadic 529s (6% of answers in `loadtest`'s faults) paused the pool about once a
# second at 50 calls/s and held the 1,000-batch run at 79% of its limit.
OVERLOAD_WINDOW_S = 2.0
OVERLOAD_PAUSE_SHARE = 0.5


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_min: int
    input_tokens_per_min: int
    output_tokens_per_min: int | None = None  # None: not limited

    def as_dict(self) -> dict[str, int | None]:
        return {"requests": self.requests_per_min, "input_tokens": self.input_tokens_per_min,
                "output_tokens": self.output_tokens_per_min}


def check_limits(limits: Limits, *, real_provider: bool) -> list[str]:
    """Problems with configured limits (empty when fine)."""
    problems = []
    for name, value in limits.as_dict().items():
        if value is None:
            continue
        if value <= 0:
            problems.append(f"{name} per minute must be positive, got {value}")
        elif real_provider and value > MAX_KNOWN_TIER[name]:
            problems.append(f"{name} per minute {value} is above any known Anthropic tier ({MAX_KNOWN_TIER[name]})")
    return problems


@dataclass(slots=True)
class Grant:
    input_tokens: int  # charged to the input bucket
    output_tokens: int  # charged to the output bucket
    raw_input_estimate: int = 0  # the estimate from the prompt, before the learned ratio
    granted_at: float = 0.0
    totals_after: dict[str, float] = field(default_factory=dict)  # pool's granted totals, this grant included
    issuer: str = ""  # the PoolLimiter that granted it


@dataclass(slots=True)
class PoolLimiter:
    limits: Limits
    now: float
    buckets: dict[str, TokenBucket] = field(init=False)
    paused_until: float = 0.0
    paused_at: float = float("-inf")  # when the latest pause began
    output_estimate: float = 256.0  # running mean of true output tokens
    input_ratio: float = 1.0  # running mean of true / estimated input tokens (the tokenizer's chars per token)
    learned: dict[str, int] = field(default_factory=dict)
    answers: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, a 529?) within OVERLOAD_WINDOW_S
    overloads: int = 0  # the 529s among `answers`
    synced: bool = False  # a `remaining` header has been seen
    restarted: bool = False  # another limiter granted on this key just before: start empty
    granted_total: dict[str, float] = field(default_factory=lambda: {"requests": 0.0, "input_tokens": 0.0,
                                                                      "output_tokens": 0.0})
    # Who grants: a restarted limiter is a new PoolLimiter and ignores reports of its predecessor's grants
    # (their totals and times are another limiter's: read as its own, a `remaining` opened a full bucket).
    issuer: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.buckets = {name: _bucket(limit, self.now, empty=self.restarted)
                        for name, limit in self.limits.as_dict().items() if limit is not None}

    def _need(self, input_tokens: int) -> dict[str, float]:
        scaled = input_tokens * self.input_ratio * INPUT_MARGIN
        return {"requests": 1.0, "input_tokens": scaled, "output_tokens": self.output_estimate}

    def wait_for(self, input_tokens: int, now: float) -> float:
        """Seconds until a request of `input_tokens` may be sent (0.0: now)."""
        if not self.synced:
            for b in self.buckets.values():
                b.level = min(b.available(now), b.refill_per_s * START_ALLOWANCE_S)
        need = self._need(input_tokens)
        waits = [b.wait_for(need[name], now) for name, b in self.buckets.items()]
        return max([self.paused_until - now, *waits, 0.0])

    def try_acquire(self, input_tokens: int, now: float) -> tuple[float, Grant | None]:
        wait = self.wait_for(input_tokens, now)
        if wait > 0:
            return wait, None
        need = self._need(input_tokens)
        for name, b in self.buckets.items():
            b.try_take(need[name], now)
        for name in self.granted_total:
            self.granted_total[name] += need[name]
        return 0.0, Grant(math.ceil(need["input_tokens"]), math.ceil(self.output_estimate), input_tokens, now,
                          dict(self.granted_total), self.issuer)

    def report(self, grant: Grant, headers: Mapping[str, str], usage: tuple[int, int] | None,
               retry_after_s: float | None, now: float, *, overloaded: bool = False) -> bool:
        """After a call: its response headers, true usage (None: refused, nothing used), any retry-after, and
        whether the answer was a 529. False (and nothing learned) for a grant this limiter did not issue."""
        if grant.issuer != self.issuer:
            return False
        if usage is None:
            self.release(grant, now)
        else:
            self.settle(grant, usage[0], usage[1], now)
        self.observe(headers, now, grant)
        overload_goes_on = self._note_answer(now, overloaded)
        if retry_after_s is not None and (not overloaded or overload_goes_on):
            self.pause(retry_after_s, now, grant)
        return True

    def _note_answer(self, now: float, overloaded: bool) -> bool:
        """Note an answer (`overloaded`: a 529); whether 529s are at least OVERLOAD_PAUSE_SHARE of the answers of
        the last OVERLOAD_WINDOW_S."""
        self.answers.append((now, overloaded))
        self.overloads += overloaded
        while self.answers[0][0] < now - OVERLOAD_WINDOW_S:
            self.overloads -= self.answers.popleft()[1]
        return self.overloads >= OVERLOAD_PAUSE_SHARE * len(self.answers)

    def settle(self, grant: Grant, input_tokens: int, output_tokens: int, now: float) -> None:
        """Replace a grant's estimates with the true usage (refund or charge the difference)."""
        for name, estimated, actual in (("input_tokens", grant.input_tokens, input_tokens),
                                        ("output_tokens", grant.output_tokens, output_tokens)):
            b = self.buckets.get(name)
            if b is not None:
                b.available(now)
                b.level = min(b.capacity, b.level + estimated - actual)  # may go below 0: a debt to refill
        if output_tokens <= 0:  # no answer (refused or failed): nothing to learn from
            return
        self.output_estimate = 0.9 * self.output_estimate + 0.1 * output_tokens
        if grant.raw_input_estimate > 0 and input_tokens > 0:
            ratio = min(2.0, max(0.5, input_tokens / grant.raw_input_estimate))
            self.input_ratio = 0.9 * self.input_ratio + 0.1 * ratio

    def release(self, grant: Grant, now: float) -> None:
        """A granted request was never sent: give its estimates back."""
        self.settle(grant, 0, 0, now)
        b = self.buckets.get("requests")
        if b is not None:
            b.level = min(b.capacity, b.level + 1.0)

    def pause(self, seconds: float, now: float, grant: Grant | None = None) -> None:
        """429 (or an overload going on) with retry-after: nobody in the pool sends until then. A refusal of a
        request granted before the latest pause began is that same episode: when every in-flight refusal pushed
        the pause on, 6% of answers 529 at 50 requests/s kept the pool paused ~75% of the time (13 of 50 req/s)."""
        if grant is not None and grant.granted_at < self.paused_at:
            return
        if now + seconds > self.paused_until:
            self.paused_at, self.paused_until = now, now + seconds

    def observe(self, headers: Mapping[str, str], now: float, grant: Grant | None = None) -> None:
        """Learn limits and the server's level from the `anthropic-ratelimit-*` headers of the answer to
        `grant`. The server computed `remaining` when it admitted that request; since then it has refilled
        for (at most) the time since our grant and will charge what we granted after it."""
        for prefix, name in _HEADER_BUCKETS.items():
            limit = _int(headers.get(f"anthropic-ratelimit-{prefix}-limit"))
            remaining = _int(headers.get(f"anthropic-ratelimit-{prefix}-remaining"))
            if limit is None or limit <= 0:
                continue
            b = self.buckets.get(name)
            if b is None:  # a limit we were not told about
                b = self.buckets[name] = _bucket(limit, now)
            if b.capacity != limit:
                b.available(now)
                b.capacity, b.refill_per_s = float(limit), limit / 60.0
                b.level = min(b.level, b.capacity)
                self.learned[name] = limit
            if remaining is not None:
                b.available(now)
                server = float(remaining)
                if grant is not None:
                    later = self.granted_total[name] - grant.totals_after.get(name, self.granted_total[name])
                    server += b.refill_per_s * max(0.0, now - grant.granted_at) - later
                # Raise our level to the server's only at the first sync (a rested key's full bucket);
                # after that the server's view may only lower ours (another client on the same key).
                b.level = min(b.capacity, server) if not self.synced else min(b.level, server)
        if any(_int(headers.get(f"anthropic-ratelimit-{p}-remaining")) is not None for p in _HEADER_BUCKETS):
            self.synced = True

    def snapshot(self, now: float) -> dict[str, dict[str, float]]:
        return {name: {"limit_per_min": b.capacity, "available": round(b.available(now), 1)}
                for name, b in self.buckets.items()}


def _bucket(limit_per_min: int, now: float, *, empty: bool = False) -> TokenBucket:
    b = TokenBucket.per_minute(limit_per_min, now)
    b.level = 0.0 if empty else b.refill_per_s * START_ALLOWANCE_S
    return b


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# How long a permit's round trip to the limiter actor may take on a loaded node: the asks in flight must
# cover it at the pool's rate (Little's law). 0.75 s was tried: more requests waiting at the limiter meant
# bursts the server refused after a limiter restart or with a limit configured too high (tests in
# test_provider_limits), and `loadtest --batches 1000` ran at 79% of its limit with it, 72.5% without
# (docs/benchmarks.md).
LIMITER_ROUND_TRIP_S = 0.25


def acquire_depth(requests_per_minute: int, workers: int) -> int:
    """Permit requests one worker keeps waiting at the limiter: enough to cover the round trip at the
    pool's rate, no more. The limiter serves first come, first served, so whatever waits there is ahead of
    a batch that arrives next (the round-robin across batches happens in the workers' queues). One at a
    time served ~8 requests/s per worker under load; unbounded, a new small batch waited behind them all."""
    return max(2, math.ceil(requests_per_minute / 60 * LIMITER_ROUND_TRIP_S / workers))


IN_FLIGHT_HEADROOM = 1.5  # above Little's law: latency varies, and a slot is held a little past the answer
IN_FLIGHT_QUANTILE = 0.9  # of the latencies observed


def calls_in_flight(requests_per_minute: int, latencies_s: Sequence[float], workers: int, floor: int) -> int:
    """Calls one worker keeps at the provider at once (Messages mode), by Little's law: the pool's rate per
    second × a high quantile of the latency observed × headroom, shared by the workers; `floor` until
    latencies are known, and never below it. A constant instead caps the pool at slots / latency whatever the
    rate limit: 2 workers × 64 slots at 3 s answered 43/s of a 67/s limit."""
    if not latencies_s:
        return floor
    ordered = sorted(latencies_s)
    latency = ordered[min(len(ordered) - 1, int(IN_FLIGHT_QUANTILE * len(ordered)))]
    return max(floor, math.ceil(requests_per_minute / 60 * latency * IN_FLIGHT_HEADROOM / workers))
