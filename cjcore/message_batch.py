"""Finding a Message Batch whose create got no answer (invariant 13), pure: the API's list has no field of
ours, so a lost create is recognised by what it must look like: not already recorded, created no earlier than
the create was sent (less the clocks' skew), with exactly as many requests."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

CLOCK_SKEW_S = 60.0  # the provider's clock against ours


@dataclass(frozen=True, slots=True)
class Listed:
    """A Message Batch as the API's list shows it."""

    id: str
    created_at: float  # Unix seconds
    items: int


def lost_create(listed: Sequence[Listed], items: int, sent_at: float, ours: Collection[str]) -> Listed | None:
    """The listed batch that is the lost create, if any: of those that fit, the one created nearest `sent_at`."""
    fits = [b for b in listed if b.items == items and b.id not in ours and b.created_at >= sent_at - CLOCK_SKEW_S]
    return min(fits, key=lambda b: abs(b.created_at - sent_at), default=None)
