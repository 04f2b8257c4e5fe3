"""One comparison through the real `anthropic` SDK, and the one place its exceptions are translated.

Every outcome is a ComparisonResult: a verdict, or an error result with its ErrorType, HTTP status and
the provider's request id. Nothing here raises for a provider failure, and nothing here logs the API
key or essay text.

Retries: the SDK's own retries are off (max_retries=0). A failed call becomes an error result, and the
coordinator's failure policy decides whether the pair is tried again as a new attempt (new row, new
correlation id), so every provider call is counted once and no request is retried twice over.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic

from cjcore.contracts import ComparisonRequest, ComparisonResult, ErrorType
from cjcore.message_batch import Listed
from cjcore.prompt import MalformedVerdict, message_params, parse_verdict
from cjcore.rate_limit import TOOL_USE_OVERHEAD_TOKENS, estimate_tokens
from cjcore.retry import TRANSIENT
from cjcore.retrying import retrying
from cjcore.settings import ModelPrice


@dataclass(slots=True)
class ProviderOutcome:
    result: ComparisonResult
    headers: dict[str, str] = field(default_factory=dict)  # anthropic-ratelimit-*, retry-after, request-id


def _ratelimit_headers(headers: object) -> dict[str, str]:
    items = getattr(headers, "items", None)
    if items is None:
        return {}
    return {k.lower(): v for k, v in items() if k.lower().startswith("anthropic-ratelimit-")
            or k.lower() in ("retry-after", "request-id")}


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def estimate_input_tokens(req: ComparisonRequest) -> int:
    """What the provider will count against input tokens/min, estimated before sending."""
    params = message_params(req)
    chars = len(req.instructions) + len(params["messages"][0]["content"]) + len(str(params["tools"]))
    return estimate_tokens(chars) + TOOL_USE_OVERHEAD_TOKENS


def cost_usd(price: ModelPrice, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_read * price.cache_read
        + cache_write * price.cache_write_5m
    ) / 1_000_000


def _status_error_type(exc: anthropic.APIStatusError) -> ErrorType:
    status = exc.status_code
    if status == 429:
        return ErrorType.RATE_LIMIT
    if status == 529 or isinstance(exc, anthropic.OverloadedError):
        return ErrorType.OVERLOADED
    if status in (401, 403):
        return ErrorType.AUTHENTICATION
    if status in (408, 504):
        return ErrorType.TIMEOUT
    if status >= 500:
        return ErrorType.SERVER_ERROR
    return ErrorType.INVALID_REQUEST


def _failure(exc: anthropic.APIStatusError | anthropic.APIConnectionError) -> tuple[ErrorType, str, dict[str, Any]]:
    """A failed call (either API) as our error type, details, and the HTTP status and request id if any."""
    if isinstance(exc, anthropic.APIStatusError):
        return (_status_error_type(exc), f"HTTP {exc.status_code} {type(exc).__name__}",
                {"http_status": exc.status_code, "provider_request_id": exc.request_id})
    if isinstance(exc, anthropic.APITimeoutError):  # a subclass of APIConnectionError: first
        return ErrorType.TIMEOUT, "request timed out", {}
    return ErrorType.CONNECTION, f"connection error: {type(exc.__cause__).__name__}", {}


async def compare(client: anthropic.AsyncAnthropic, req: ComparisonRequest, price: ModelPrice) -> ProviderOutcome:
    started = time.monotonic()

    def ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        raw = await client.messages.with_raw_response.create(**message_params(req))
        body = await raw.read()
    except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
        kind, details, ids = _failure(exc)
        headers = _ratelimit_headers(exc.response.headers) if isinstance(exc, anthropic.APIStatusError) else {}
        return ProviderOutcome(ComparisonResult.error(req, kind, details, latency_ms=ms(),
                                                      retry_after_s=_retry_after(headers), **ids), headers)
    headers = _ratelimit_headers(raw.headers)
    status = raw.http_response.status_code
    # Decoded as plain JSON, not into the SDK's typed Message (its construction was a twentieth of a worker's
    # CPU); a 200 whose body is not a JSON object (a proxy's page) is a malformed answer, not an exception.
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return ProviderOutcome(ComparisonResult.error(req, ErrorType.MALFORMED_OUTPUT, f"HTTP {status}: the body is "
                                                      "not a JSON object", latency_ms=ms(), http_status=status,
                                                      provider_request_id=raw.request_id), headers)
    return ProviderOutcome(
        _from_message(req, message, price, status, message.get("id") or raw.request_id, ms()), headers)


def unexpected(req: ComparisonRequest, exc: BaseException) -> ProviderOutcome:
    """An exception no branch of the call expected (a reset while reading results, a truncated line, a bug):
    a transient error result naming its type, so the attempt is settled, retried and counted, never held."""
    return ProviderOutcome(ComparisonResult.error(req, ErrorType.UNEXPECTED, f"unexpected {type(exc).__name__}"))


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK object or of the same object as decoded JSON."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _from_message(req: ComparisonRequest | tuple[str, str], message: Any, price: ModelPrice, http_status: int,
                  request_id: str | None, latency_ms: int, discount: float = 1.0) -> ComparisonResult:
    """A verdict, or the error result for an answer that carries none (`message`: an SDK Message, or one
    decoded from a Message Batch's results as a dict; `req`: the request, or its (correlation id, batch id))."""
    usage = _field(message, "usage")
    tokens = {
        "input_tokens": _field(usage, "input_tokens") or 0,
        "output_tokens": _field(usage, "output_tokens") or 0,
        "cache_read_tokens": _field(usage, "cache_read_input_tokens") or 0,
        "cache_write_tokens": _field(usage, "cache_creation_input_tokens") or 0,
    }
    spent = discount * cost_usd(price, tokens["input_tokens"], tokens["output_tokens"], tokens["cache_read_tokens"],
                                tokens["cache_write_tokens"])
    common: dict[str, Any] = {"http_status": http_status, "provider_request_id": request_id, "cost_usd": spent,
              "latency_ms": latency_ms, **tokens}
    if _field(message, "stop_reason") == "max_tokens":  # a cut-off answer is surfaced, never parsed as a verdict
        return ComparisonResult.error(req, ErrorType.MAX_TOKENS, "stop_reason max_tokens", **common)
    try:
        verdict = parse_verdict(list(_field(message, "content") or []))
    except MalformedVerdict as exc:
        return ComparisonResult.error(req, ErrorType.MALFORMED_OUTPUT, str(exc), **common)
    cid, bid = (req.correlation_id, req.batch_id) if isinstance(req, ComparisonRequest) else req
    return ComparisonResult(cid, bid, verdict.winner, confidence=verdict.confidence,
                            justification=verdict.justification, **common)


# -- Message Batches -------------------------------------------------------------------------------------

BATCH_DISCOUNT = 0.5  # the Message Batches API bills input and output at half price

# An errored batch item's error type → ours (the same classes as the Messages API's HTTP errors).
_BATCH_ERRORS = {
    "rate_limit_error": ErrorType.RATE_LIMIT, "overloaded_error": ErrorType.OVERLOADED,
    "api_error": ErrorType.SERVER_ERROR, "timeout_error": ErrorType.TIMEOUT,
    "authentication_error": ErrorType.AUTHENTICATION, "permission_error": ErrorType.AUTHENTICATION,
}

_BATCH_OTHER = {"expired": (ErrorType.TIMEOUT, "message batch item expired"),
                "canceled": (ErrorType.CANCELLED, "message batch item canceled")}


@dataclass(slots=True)
class BatchApi:
    """How the Message Batches API's calls (create, list, polls, results, cancel) go through the pool's
    limiter, in a bucket of the Batches API's own limits: `permit()` waits for a grant; `refused(grant, headers,
    retry_after_s, overloaded)` reports a 429 or a 529 (which may pause them), `answered(grant)` any other answer."""

    permit: Callable[[], Awaitable[Any]]
    answered: Callable[[Any], Awaitable[None]]
    refused: Callable[[Any, dict[str, str], float | None, bool], Awaitable[None]]


async def _free_permit() -> None:
    return None


async def _ignore(*_: Any) -> None:
    return None


UNLIMITED = BatchApi(_free_permit, _ignore, _ignore)  # tests of the provider call alone


class GaveUp(Exception):
    """A Message Batch call failed permanently, or transiently for longer than the outage limit."""

    def __init__(self, kind: ErrorType, details: str, ids: dict[str, Any]):
        super().__init__(details)
        self.kind, self.details, self.ids = kind, details, ids


class Lost(GaveUp):
    """A create that got no answer (a lost connection, a timeout, a 5xx): the Message Batch may exist."""


class Transient(GaveUp):
    """A transient failure, retried after `retry_after` seconds when the provider names them."""

    def __init__(self, kind: ErrorType, details: str, ids: dict[str, Any], retry_after: float | None):
        super().__init__(kind, details, ids)
        self.retry_after = retry_after


async def _persist(call: Callable[[], Awaitable[Any]], api: BatchApi, *, outage_s: float | None,
                   max_delay_s: float) -> Any:
    """One call of the Message Batches API, retried through transient failures (429, 529, 5xx, timeouts,
    lost connections) with backoff that honours `retry-after`, until it answers or has failed for `outage_s`
    (then the last failure, a Transient, which is a GaveUp); a permanent failure (400, 401, 404…) is raised
    as GaveUp at once."""
    def transient(exc: Exception) -> bool | float:
        return (exc.retry_after if exc.retry_after is not None else True) if isinstance(exc, Transient) else False

    async for attempt in retrying(transient, within_s=outage_s, first_s=0.5, max_s=max_delay_s):
        with attempt:
            grant = await api.permit()
            try:
                answer = await call()
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                kind, details, ids = _failure(exc)
                headers = _ratelimit_headers(exc.response.headers) if isinstance(exc, anthropic.APIStatusError) \
                    else {}
                retry_after = _retry_after(headers)
                await api.refused(grant, headers, retry_after, kind is ErrorType.OVERLOADED) \
                    if kind in (ErrorType.RATE_LIMIT, ErrorType.OVERLOADED) else await api.answered(grant)
                if kind not in TRANSIENT:
                    raise GaveUp(kind, details, ids) from None
                raise Transient(kind, details, ids, retry_after) from None
            await api.answered(grant)
            return answer
    raise AssertionError("unreachable: stamina retries until the call returns or raises")


def batch_requests(reqs: list[ComparisonRequest]) -> list[dict[str, Any]]:
    return [{"custom_id": r.correlation_id, "params": message_params(r)} for r in reqs]


async def create_message_batch(client: anthropic.AsyncAnthropic, reqs: list[ComparisonRequest],
                               api: BatchApi) -> tuple[str, float]:
    """One create, charged to the Batches API's limits: the provider's id and creation time. Raises Lost
    when no answer came (the batch may exist: look for it before sending again), GaveUp when refused."""
    grant = await api.permit()
    try:
        batch = await client.messages.batches.create(requests=batch_requests(reqs))  # type: ignore[arg-type]
    except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
        kind, details, ids = _failure(exc)
        headers = _ratelimit_headers(exc.response.headers) if isinstance(exc, anthropic.APIStatusError) else {}
        retry_after = _retry_after(headers)
        if kind in (ErrorType.RATE_LIMIT, ErrorType.OVERLOADED):
            await api.refused(grant, headers, retry_after, kind is ErrorType.OVERLOADED)
            raise Transient(kind, details, ids, retry_after) from None  # refused: nothing was created
        await api.answered(grant)
        if isinstance(exc, anthropic.APIConnectionError) or kind in (ErrorType.SERVER_ERROR, ErrorType.TIMEOUT):
            raise Lost(kind, details, ids) from None  # no answer, or one that does not say it was refused
        raise GaveUp(kind, details, ids) from None
    await api.answered(grant)
    return batch.id, batch.created_at.timestamp()


async def recent_message_batches(client: anthropic.AsyncAnthropic, since: float, api: BatchApi, *,
                                 outage_s: float | None, max_delay_s: float) -> list[Listed]:
    """The Message Batches created since `since` (Unix seconds), newest first, through the API's list."""
    out: list[Listed] = []
    after: str | None = None
    while True:
        kw: dict[str, Any] = {"limit": 100, **({"after_id": after} if after else {})}
        page = await _persist(functools.partial(client.messages.batches.list, **kw), api, outage_s=outage_s,
                              max_delay_s=max_delay_s)
        for b in page.data:
            created = b.created_at.timestamp()
            if created < since:
                return out
            c = b.request_counts
            out.append(Listed(b.id, created, c.processing + c.succeeded + c.errored + c.canceled + c.expired))
        if not page.has_more or not page.data:
            return out
        after = page.data[-1].id


async def poll_message_batch(client: anthropic.AsyncAnthropic, batch_id: str, api: BatchApi, *, cancel: bool,
                             outage_s: float | None, max_delay_s: float) -> str:
    """Its processing status (after asking the provider to cancel it, when `cancel`)."""
    call = client.messages.batches.cancel if cancel else client.messages.batches.retrieve
    return str((await _persist(lambda: call(batch_id), api, outage_s=outage_s, max_delay_s=max_delay_s))
               .processing_status)


async def message_batch_outcomes(
    client: anthropic.AsyncAnthropic, batch_id: str, items: list[tuple[str, str]], price: ModelPrice, api: BatchApi,
    *, latency_ms: int, outage_s: float | None, max_delay_s: float,
) -> list[ProviderOutcome]:
    """An ended Message Batch's results: one outcome per (correlation id, batch id), in order."""
    # Read raw and decoded as JSON: building the SDK's typed objects line by line cost more CPU than everything
    # else a worker does per comparison (py-spy, `bench throughput`).
    raw = await _persist(lambda: client.messages.batches.with_raw_response.results(batch_id), api,
                         outage_s=outage_s, max_delay_s=max_delay_s)
    results = {}
    for line in (await raw.read()).splitlines():
        if line.strip():
            item = json.loads(line)
            results[item.get("custom_id")] = item.get("result") or {}
    outcomes = []
    for ids in items:
        result = results.get(ids[0], {})
        kind = result.get("type")
        if kind == "succeeded":
            message = result.get("message") or {}
            outcomes.append(ProviderOutcome(
                _from_message(ids, message, price, 200, message.get("id"), latency_ms, BATCH_DISCOUNT)))
            continue
        if kind == "errored":
            err = str(((result.get("error") or {}).get("error") or {}).get("type"))
            error_type, details = _BATCH_ERRORS.get(err, ErrorType.INVALID_REQUEST), f"message batch item {err}"
        else:
            error_type, details = _BATCH_OTHER.get(kind or "", (ErrorType.SERVER_ERROR, "no result in the batch"))
        outcomes.append(ProviderOutcome(ComparisonResult.error(
            ids, error_type, details, provider_request_id=batch_id, latency_ms=latency_ms)))
    return outcomes


def make_client(api_key: str, base_url: str | None, timeout_s: float) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
