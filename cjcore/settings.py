"""Configuration: `CJ_`-prefixed environment variables, read once at start and passed to actors.

Units are in the names. Settings are validated here so that a deployment that cannot work fails at
start with a message naming the variable, not at the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cjcore.errors import ConfigError
from cjcore.rate_limit import Limits, check_limits

ANTHROPIC_API_URL = "https://api.anthropic.com"


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_read: float


# Public list prices (USD per million tokens); cache writes 1.25× input, reads 0.1× input.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0, cache_write_5m=1.25, cache_read=0.10),
    "claude-sonnet-4-5": ModelPrice(input=3.0, output=15.0, cache_write_5m=3.75, cache_read=0.30),
    "claude-opus-4-1": ModelPrice(input=15.0, output=75.0, cache_write_5m=18.75, cache_read=1.50),
}


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cj"


MESSAGES_ROUND_TAIL_PCT = 10.0  # docs/benchmarks.md "Calls in flight follow the latency"
BATCHES_PAIRS_PER_ESSAY = 2.5  # `bench pairing --sections rounds`: 24 essays reach 0.85 in at most 4 round trips


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CJ_", extra="ignore")

    # Where things are
    database_url: str | None = None  # absent → embedded PostgreSQL in state_dir
    # Embedded PostgreSQL, the Ray token, deployment.json (default ~/.local/state/cj).
    state_dir: Path = Field(default_factory=default_state_dir)
    ray_address: str | None = None  # absent → up/demo start a local Ray
    ray_namespace: str = "cj"  # one deployment's actors; two deployments on one cluster differ here
    provider_base_url: str | None = None  # absent with an API key → the real Anthropic API
    # The real API's key: never logged, stored or given to an actor (provider workers read it where they run).
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "CJ_ANTHROPIC_API_KEY")
    )
    # A file holding the key, read by the provider workers on their own node (never sent through Ray).
    anthropic_api_key_file: Path | None = None
    # Set at validation where the key is known (the driver), so actors, which never get the key, know too.
    real_provider: bool = False

    # Provider pool
    workers: int = Field(default=2, ge=1, le=256)  # provider workers (async actors) in the pool
    # Calls at the provider at once per worker (Messages mode). None: sized by Little's law from the rate limit
    # and the latency observed (cjcore/rate_limit.py calls_in_flight), at least 16; a number: that, fixed.
    worker_max_in_flight: int | None = Field(default=None, ge=1, le=10_000)
    # The provider's requests/min for the pool (learned from headers when wrong).
    requests_per_minute: int = Field(default=4_000, ge=1)
    tokens_per_minute: int = Field(default=2_000_000, ge=1)  # input tokens/min
    output_tokens_per_minute: int | None = Field(default=None, ge=1)  # output tokens/min, if the provider limits them
    # A Messages call answered later than this is a timeout error result.
    provider_timeout_s: float = Field(default=60.0, gt=0)
    result_delivery_timeout_s: float = Field(default=120.0, gt=0)  # undelivered this long: a warning (still held)
    # Per model, USD per million tokens (input, output, cache read, cache write).
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    # "messages": one Messages API call per comparison (answers in seconds). "batches": the Message
    # Batches API, many comparisons per call at half price (the provider answers within 24 h; the
    # simulated one after --latency-ms): the mode for bulk marking and for throughput past ~300/s here.
    provider_mode: Literal["messages", "batches"] = "messages"
    batch_max_requests: int = Field(default=1_000, ge=1, le=100_000)  # per Message Batch (and at most 256 MB)
    batch_window_s: float = Field(default=0.05, ge=0)  # gather requests this long before creating a batch
    # The Batches API's own limits (not the Messages buckets): its calls (create, list, retrieve, results,
    # cancel) per minute across the pool (None: 50, tier 1's, against the real API; 6,000 against the
    # simulator), and requests waiting in Message Batches at the provider at once.
    batches_api_requests_per_minute: int | None = Field(default=None, ge=1)
    # Requests waiting in Message Batches at the provider at once, split over workers.
    batch_queue_max_requests: int = Field(default=100_000, ge=1)
    # Status polls of a Message Batch: the first after batch_poll_s, growing 1.5× per poll to batch_poll_max_s.
    # Unset, they suit the provider: 0.05 s → 30 s against the simulator; 30 s → 300 s against the real API,
    # whose batches take minutes to hours (polls go through the limiter, in a bucket of their own).
    batch_poll_s: float | None = Field(default=None, gt=0)
    batch_poll_max_s: float | None = Field(default=None, gt=0)  # the longest wait between two polls (see batch_poll_s)

    # Batches
    max_essays_per_batch: int = Field(default=2_000, ge=2)  # a larger request is refused naming `essays`
    max_essay_chars: int = Field(default=60_000, ge=1)  # a longer essay is refused naming `essays[i].text`
    default_max_comparisons: int = Field(default=200, ge=1)  # budget when the request gives none
    # Valid results as a share of the denominator that end a batch (a request may override).
    completion_threshold_pct: float = Field(default=95.0, gt=0, le=100)
    score_stability_threshold: float = Field(default=0.1, gt=0)  # logits; docs/assessment.md "Completion, retries…"
    # Stop once the fit's reliability reaches this (a request's target_reliability overrides it), after a
    # round that added valid verdicts and with at least min_comparisons_per_essay (docs/architecture.md).
    target_reliability: float = Field(default=0.9, gt=0, le=1)
    # Valid comparisons per essay before `reliable` may stop a batch.
    min_comparisons_per_essay: float = Field(default=4.0, ge=0)
    # Rounds a batch may take, at least (more when its budget needs more at its round size).
    max_iterations: int = Field(default=20, ge=1)
    # Pairs planned per essay each round. None: 1 in Messages mode (a round trip takes seconds, so small adaptive
    # rounds cost nothing), 2.5 in Message Batches mode (a round trip takes up to hours: fewer, larger rounds).
    pairs_per_essay_per_round: float | None = Field(default=None, gt=0)
    # A round is scored, and the next one sent, once no more than this share of its pairs is still out; the
    # tail lands during the next round, and a batch finalizes only with nothing out. None: 10 in Messages mode
    # (each round otherwise waits for its slowest answer), 0 in Message Batches mode (a Message Batch answers
    # all at once, and a batch waiting on one must hold nothing).
    round_tail_pct: float | None = Field(default=None, ge=0, lt=100)
    bt_regularization: float = Field(default=0.3, gt=0)  # prior precision; docs/assessment.md "Completion…"
    max_attempts: int = Field(default=3, ge=1, le=10)  # per comparison, counting retries as new attempts
    min_success_rate: float = Field(default=0.25, ge=0, le=1)  # valid / attempts; below it the batch FAILS
    min_attempts_for_failure: int = Field(default=20, ge=1)  # attempts back before that rule applies
    # Only transient failures (429, 529, 5xx, timeouts, lost connections, expiry) for this long: the batch
    # ends FAILED with reason provider_outage (the only way the provider's trouble fails a batch).
    provider_outage_s: float = Field(default=900.0, gt=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)  # a chain's first retry waits this, doubling per attempt
    retry_backoff_max_s: float = Field(default=30.0, ge=0)  # the longest wait before a retry

    database_outage_s: float = Field(default=60.0, gt=0)  # DB calls retry this long through a restart

    # Admission: batches are accepted QUEUED; at most this many are in progress at once (None: what a quarter
    # of the cluster's schedulable memory holds; cjcore/admission.py), and in Messages mode only while the
    # comparisons waiting for the provider are under admission_backlog_s seconds of its rate limit.
    max_live_batches: int | None = Field(default=None, ge=1)
    # Messages mode: comparisons waiting for the provider, in seconds of its rate limit.
    admission_backlog_s: float = Field(default=30.0, gt=0)
    admission_start_concurrency: int = Field(default=64, ge=1)  # activations awaited at once
    admission_aging_per_s: float = Field(default=2.0, ge=0)  # see cjcore/admission.py

    # Coordinator hosts: processes hosting many batch coordinators each (None: one per CPU of the cluster,
    # resolved when the deployment starts). A batch with nothing to do but wait for results is passivated
    # (dropped from memory) after passivate_after_s; its next message activates it from the database.
    coordinator_hosts: int | None = Field(default=None, ge=1, le=1024)
    # A batch only waiting for results leaves memory after this long.
    passivate_after_s: float = Field(default=10.0, gt=0)
    activation_concurrency: int = Field(default=16, ge=1)  # activations at once per host (restart: no storm)

    # Scoring and supervision
    scorers: int = Field(default=1, ge=1, le=64)  # Bradley-Terry scoring actors
    # A request without a result this long, held by no worker, is expired.
    max_processing_seconds: float = Field(default=300.0, gt=0)
    supervisor_interval_s: float = Field(default=10.0, gt=0)  # between Supervisor sweeps
    batch_idle_s: float = Field(default=120.0, gt=0)  # a batch quiet this long gets its coordinator checked

    # Observability and events
    metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0: any free port (tests)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 to let a Prometheus on another machine scrape
    # Outbox events are POSTed here, at least once. A secret (it may carry a token): never in an actor's
    # arguments; the outbox reads it from its node's CJ_EVENT_WEBHOOK_URL, or from the file named here.
    event_webhook_url: str | None = None
    event_webhook_url_file: Path | None = None  # a file holding the webhook URL (read by the outbox where it runs)
    webhook_timeout_s: float = Field(default=5.0, gt=0)  # one webhook POST
    outbox_poll_s: float = Field(default=0.5, gt=0)  # between the outbox publisher's reads of unpublished events
    log_level: str = "INFO"  # DEBUG, INFO, WARNING or ERROR

    # HTTP API and report pages (Ray Serve): docs/http.md
    http_enabled: bool = True  # `up` serves the HTTP API and the pages; false: the command line only
    http_host: str = "127.0.0.1"  # 0.0.0.0 to serve other machines
    http_port: int = Field(default=8000, ge=1, le=65535)  # where Serve's proxy listens (one per cluster)
    # The bearer token of the API and pages: never logged, stored or given to an actor. Unset: the one `up`
    # generated into <state_dir>/api_token (0600) at the first `up` and printed once.
    api_token: SecretStr | None = None
    # A request body above this is refused (413) before it is parsed: 2,000 essays of 60,000 characters as JSON,
    # with room for escapes.
    max_request_bytes: int = Field(default=160_000_000, ge=1_000)

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    @model_validator(mode="after")
    def _limits_plausible(self) -> Settings:
        problems = check_limits(self.limits(), real_provider=self.uses_real_anthropic)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _poll_cadence(self) -> Settings:
        real = self.uses_real_anthropic
        if self.batch_poll_s is None:
            self.batch_poll_s = 30.0 if real else 0.05
        if self.batch_poll_max_s is None:
            self.batch_poll_max_s = 300.0 if real else 30.0
        if self.batches_api_requests_per_minute is None:
            self.batches_api_requests_per_minute = 50 if real else 6_000
        return self

    @property
    def round_pairs_per_essay(self) -> float:
        if self.pairs_per_essay_per_round is not None:
            return self.pairs_per_essay_per_round
        return BATCHES_PAIRS_PER_ESSAY if self.provider_mode == "batches" else 1.0

    @property
    def round_tail(self) -> float:
        if self.round_tail_pct is not None:
            return self.round_tail_pct
        return 0.0 if self.provider_mode == "batches" else MESSAGES_ROUND_TAIL_PCT

    def batches_api_limits(self) -> Limits:
        return Limits(self.batches_api_requests_per_minute or 50, 10**12)

    def limits(self) -> Limits:
        return Limits(self.requests_per_minute, self.tokens_per_minute, self.output_tokens_per_minute)

    @property
    def uses_real_anthropic(self) -> bool:
        return self.provider_base_url is None and (
            self.real_provider or self.anthropic_api_key is not None or self.anthropic_api_key_file is not None)

    def public(self) -> dict[str, object]:
        """As they may be written down (deployment.json) or published (the Supervisor): no API key, the
        database password and the webhook URL (often a bearer secret) redacted."""
        out = self.model_dump(mode="json", exclude={"anthropic_api_key", "api_token"})
        if self.database_url:
            out["database_url"] = redacted(self.database_url)
        if self.event_webhook_url:
            out["event_webhook_url"] = REDACTED
        return out

    def for_actors(self) -> Settings:
        """What actors are given: no key and no database password (Ray keeps constructor arguments in its
        GCS). Provider workers read the key where they run (`api_key_value`); every actor reads the database
        password from its node's environment (`database_url_value`), where the driver put it before starting
        the node's Ray, as `up` and `demo` do (on a cluster: export CJ_DATABASE_URL on every node)."""
        return self.model_copy(update={
            "anthropic_api_key": None, "api_token": None, "real_provider": self.uses_real_anthropic,
            "database_url": redacted(self.database_url) if self.database_url else None,
            "event_webhook_url": REDACTED if self.event_webhook_url else None})

    def webhook_url_value(self) -> str | None:
        """The webhook URL, read where it is used: as given (a driver), else the file, else (an actor given
        REDACTED) this process's CJ_EVENT_WEBHOOK_URL. None: no webhook."""
        if self.event_webhook_url_file is not None:
            try:
                return self.event_webhook_url_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"CJ_EVENT_WEBHOOK_URL_FILE: cannot read {self.event_webhook_url_file}: "
                                  f"{exc.strerror}") from None
        if self.event_webhook_url != REDACTED:
            return self.event_webhook_url
        env = os.environ.get("CJ_EVENT_WEBHOOK_URL")
        if not env:
            raise ConfigError("CJ_EVENT_WEBHOOK_URL: the webhook URL is not in this node's environment; export it "
                              "on the node before starting Ray there, or give CJ_EVENT_WEBHOOK_URL_FILE")
        return env

    def database_url_value(self) -> str:
        """The database URL with its password: as given (a driver), or, redacted (an actor), from this
        process's CJ_DATABASE_URL when that is the same URL. Never log or store the value."""
        url = self.database_url
        if url is None:
            raise ConfigError("CJ_DATABASE_URL: not resolved (the driver resolves it before creating actors)")
        if REDACTED not in url:
            return url
        env = os.environ.get("CJ_DATABASE_URL", "")
        if env and redacted(env) == url:
            return env
        raise ConfigError("CJ_DATABASE_URL: the database password is not in this node's environment; export "
                          "CJ_DATABASE_URL (with the password) on every node before starting Ray there")

    def api_key_value(self) -> str:
        """The key, read where it is used: given in these settings (a driver), else the key file, else this
        process's ANTHROPIC_API_KEY (a provider worker inherits its node's environment). The simulated server
        accepts any key. Never log or store the value."""
        if self.anthropic_api_key is not None:
            return self.anthropic_api_key.get_secret_value()
        if self.anthropic_api_key_file is not None:
            try:
                return self.anthropic_api_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"CJ_ANTHROPIC_API_KEY_FILE: cannot read {self.anthropic_api_key_file}: "
                                  f"{exc.strerror}") from None
        if key := os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("CJ_ANTHROPIC_API_KEY"):
            return key
        if self.uses_real_anthropic:
            raise ConfigError("ANTHROPIC_API_KEY: not in this provider worker's environment and no "
                              "CJ_ANTHROPIC_API_KEY_FILE; set one on every node that runs provider workers")
        return "sk-sim-not-a-secret"

    def price_for(self, model: str) -> ModelPrice:
        return self.prices.get(model) or self.prices.get("claude-haiku-4-5") or DEFAULT_PRICES["claude-haiku-4-5"]


REDACTED = "***"


def redacted(url: str) -> str:
    """The URL with any password hidden (in the user part or a `password=` query parameter), for logs,
    messages, actor arguments and anything written down."""
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", f":{REDACTED}@"))
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k.lower() == "password" and v for k, v in query):
        parts = parts._replace(query=urlencode([(k, REDACTED if k.lower() == "password" and v else v)
                                                for k, v in query], safe="/*"))
    return urlunsplit(parts)


def has_secret(url: str) -> bool:
    return redacted(url) != url


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise ConfigError naming the variable on bad values."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "CJ_" + str(err["loc"][0]).upper() if err["loc"] else "CJ_REQUESTS_PER_MINUTE/CJ_*TOKENS_PER_MINUTE"
        raise ConfigError(f"{name}: {str(err['msg']).removeprefix('Value error, ')}") from None
