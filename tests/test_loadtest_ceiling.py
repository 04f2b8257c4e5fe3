"""The loadtest's ceiling for `rate_limit_use_pct`: what a client sending at the limit could reach."""

from __future__ import annotations

import pytest

from benches.loadtest import use_ceiling_pct


def test_without_latency_the_ceiling_is_the_limit_plus_the_first_seconds_burst():
    # 6,000 calls at 50/s, the first 50 at once: the last is sent at (5,999 − 50) / 50 s.
    assert use_ceiling_pct(6000, 3000, 0.0) == pytest.approx(round(100 * 6000 / (5949 / 50) / 50, 1))


def test_the_slowest_answers_of_the_last_seconds_lower_the_ceiling_more_the_slower_the_provider():
    fast, slow, slower = (use_ceiling_pct(8006, 4000, ms) for ms in (50.0, 3000.0, 6000.0))
    assert 99 < fast < 101
    assert slower < slow < 90  # at 3 s mean, the last answers land ~17 s after the last call
