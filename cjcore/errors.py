"""The project's error tree. Third-party errors are translated into it at one boundary each:
`anthropic` in actors/provider_call.py (as error *results*, never raised), the database in storage/.

    CJError                      every error we raise; `correlation_id`: the batch's id where there is one
    ├── InvalidRequest           bad input; `field` names the offending field (invariant 10)
    ├── BatchExists              submit with a batch_id that is already stored
    ├── BatchNotFound            status/cancel/inspect of an unknown batch
    ├── SchemaMismatch           database enums differ from the code's; refuse to start
    ├── ConfigError              settings that cannot work (e.g. a zero rate limit)
    ├── BatchTimeout             wait() gave up before the batch reached a terminal state
    ├── DatabaseUnavailable      PostgreSQL unreachable for longer than CJ_DATABASE_OUTAGE_S
    ├── DeploymentNotFound       no deployment (admission actor) in the Ray namespace to hand a batch to
    └── Fenced                   a write of a batch by a host that no longer holds it (a stale epoch)
"""

from __future__ import annotations


class CJError(Exception):
    def __init__(self, message: str, *, correlation_id: str | None = None):
        super().__init__(message)
        self.correlation_id = correlation_id


class InvalidRequest(CJError):
    def __init__(self, field: str, message: str, *, correlation_id: str | None = None):
        super().__init__(f"{field}: {message}", correlation_id=correlation_id)
        self.field = field


class BatchExists(CJError):
    pass


class BatchNotFound(CJError):
    pass


class SchemaMismatch(CJError):
    pass


class ConfigError(CJError):
    pass


class BatchTimeout(CJError):
    pass


class DatabaseUnavailable(CJError):
    pass


class DeploymentNotFound(CJError):
    pass


class Fenced(CJError):
    """The batch was claimed by another activation since this one's (its epoch moved on): nothing was written,
    and this activation must stop."""

    def __init__(self, batch_id: str, epoch: int):
        super().__init__(f"batch {batch_id}: epoch {epoch} is stale; another activation holds the batch",
                         correlation_id=batch_id)
        self.batch_id = batch_id
        self.epoch = epoch
