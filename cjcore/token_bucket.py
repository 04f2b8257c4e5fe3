"""A continuously refilled token bucket (the algorithm Anthropic documents for its own limits).

Time is passed in, so the bucket is tested with a fake clock and used with time.monotonic().
"""

from __future__ import annotations

from dataclasses import dataclass

EPSILON = 1e-9


@dataclass(slots=True)
class TokenBucket:
    capacity: float
    refill_per_s: float
    level: float
    updated_at: float

    @classmethod
    def per_minute(cls, limit: float, now: float, start_full: bool = True) -> TokenBucket:
        return cls(float(limit), limit / 60.0, float(limit) if start_full else 0.0, now)

    def _refill(self, now: float) -> None:
        if now > self.updated_at:
            self.level = min(self.capacity, self.level + (now - self.updated_at) * self.refill_per_s)
            self.updated_at = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.level

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` fits (0.0 if it fits now); takes nothing."""
        self._refill(now)
        amount = min(amount, self.capacity)  # a request larger than the bucket waits for a full one
        # EPSILON: refill arithmetic leaves float residue; a wait of 1e-16 s would never advance a clock.
        return 0.0 if self.level + EPSILON >= amount else (amount - self.level) / self.refill_per_s

    def try_take(self, amount: float, now: float) -> float:
        """Take `amount` and return 0.0, or take nothing and return the seconds until it would fit."""
        wait = self.wait_for(amount, now)
        if wait == 0.0:
            self.level -= min(amount, self.capacity)
        return wait

    def seconds_until_full(self, now: float) -> float:
        self._refill(now)
        return (self.capacity - self.level) / self.refill_per_s
