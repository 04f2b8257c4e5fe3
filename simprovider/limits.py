"""The simulator's rate limits, written apart from the system's own bucket (cjcore/token_bucket.py), so that a
bug in one is caught by the other: Anthropic documents its limits as a bucket of a minute's worth refilled
continuously. Kept here as the time at which the bucket will be full again (a generic cell rate algorithm):
what is left at time t is capacity − (full_at − t) × rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Allowance:
    limit: int  # per minute; the capacity
    full_at: float  # monotonic time at which the bucket is full again

    @classmethod
    def starting_with(cls, limit: int, seconds_worth: float, now: float) -> Allowance:
        """A bucket holding `seconds_worth` of the rate (at most a minute's), as a new key's is."""
        held = min(float(limit), limit / 60.0 * seconds_worth)
        return cls(limit, now + (limit - held) * 60.0 / limit)

    @property
    def per_s(self) -> float:
        return self.limit / 60.0

    def left(self, now: float) -> float:
        return self.limit - max(0.0, self.full_at - now) * self.per_s

    def seconds_to_full(self, now: float) -> float:
        return max(0.0, self.full_at - now)

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` is left (a request above the capacity waits for a full bucket)."""
        short = min(amount, self.limit) - self.left(now)
        return 0.0 if short <= 1e-9 else short / self.per_s

    def charge(self, amount: float, now: float) -> None:
        """Take `amount`, even past empty (output tokens are counted after they were generated)."""
        self.full_at = max(self.full_at, now) + amount / self.per_s
