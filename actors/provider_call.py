"""One comparison through the real `anthropic` SDK, and the one place its exceptions are translated.

Every outcome is a ComparisonResult: a verdict, or an error result with its ErrorType, HTTP status and
the provider's request id. Nothing here raises for a provider failure, and nothing here logs the API
key or essay text.

Retries: the SDK's own retries are off (max_retries=0). A failed call becomes an error result, and the
coordinator's failure policy decides whether the pair is tried again as a new attempt (new row, new
correlation id), so every provider call is counted once and no request is retried twice over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anthropic

from cjcore.contracts import ComparisonRequest, ComparisonResult, ErrorType
from cjcore.prompt import MalformedVerdict, message_params, parse_verdict
from cjcore.rate_limit import TOOL_USE_OVERHEAD_TOKENS, estimate_tokens
from cjcore.settings import ModelPrice


@dataclass(slots=True)
class ProviderOutcome:
    result: ComparisonResult
    headers: dict[str, str] = field(default_factory=dict)  # anthropic-ratelimit-*, retry-after, request-id
    retry_after_s: float | None = None


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


async def compare(client: anthropic.AsyncAnthropic, req: ComparisonRequest, price: ModelPrice) -> ProviderOutcome:
    started = time.monotonic()

    def ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        raw = await client.messages.with_raw_response.create(**message_params(req))
        message = await raw.parse()
    except anthropic.APIStatusError as exc:
        headers = _ratelimit_headers(exc.response.headers)
        kind = _status_error_type(exc)
        details = f"HTTP {exc.status_code} {type(exc).__name__}"
        result = ComparisonResult.error(
            req, kind, details, http_status=exc.status_code, provider_request_id=exc.request_id, latency_ms=ms()
        )
        return ProviderOutcome(result, headers, _retry_after(headers))
    except anthropic.APITimeoutError:
        return ProviderOutcome(ComparisonResult.error(req, ErrorType.TIMEOUT, "request timed out", latency_ms=ms()))
    except anthropic.APIConnectionError as exc:
        return ProviderOutcome(
            ComparisonResult.error(req, ErrorType.CONNECTION, f"connection error: {type(exc.__cause__).__name__}",
                                   latency_ms=ms())
        )

    headers = _ratelimit_headers(raw.headers)
    usage = message.usage
    tokens = {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_read_tokens": usage.cache_read_input_tokens or 0,
        "cache_write_tokens": usage.cache_creation_input_tokens or 0,
    }
    spent = cost_usd(price, tokens["input_tokens"], tokens["output_tokens"], tokens["cache_read_tokens"],
                     tokens["cache_write_tokens"])
    common = {"http_status": raw.http_response.status_code, "provider_request_id": message.id or raw.request_id,
              "cost_usd": spent, "latency_ms": ms(), **tokens}
    if message.stop_reason == "max_tokens":  # a cut-off answer is surfaced, never parsed as a verdict
        return ProviderOutcome(
            ComparisonResult.error(req, ErrorType.MAX_TOKENS, "stop_reason max_tokens", **common), headers
        )
    try:
        verdict = parse_verdict(list(message.content))
    except MalformedVerdict as exc:
        return ProviderOutcome(ComparisonResult.error(req, ErrorType.MALFORMED_OUTPUT, str(exc), **common), headers)
    return ProviderOutcome(
        ComparisonResult(
            req.correlation_id, req.batch_id, verdict.winner, confidence=verdict.confidence,
            justification=verdict.justification, **common,
        ),
        headers,
    )


def make_client(api_key: str, base_url: str | None, timeout_s: float) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
