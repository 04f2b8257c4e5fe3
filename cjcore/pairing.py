"""Which essays to compare next, in which A/B order.

`first_round` gives a connected design (a random ring, then random matchings) where every essay takes
part in a similar number of pairs. `next_round` prefers the unused pairs that are most informative for
the current fit: close scores (largest p(1−p)) between uncertain essays (largest var of the difference),
with a per-essay cap so a round spreads over the whole batch. A pair is not repeated until every pair
has been tried (above ALL_PAIRS_UP_TO pairs: every candidate pair, see `_candidates`). Every pair's A/B
order is a fair coin, so anchors (or any essay) sit in position A half of the time whatever the order of
the input.

`held` essays (a ruler's anchors, calibrated already) are never paired with each other: each of their pairs
would only re-measure what the ruler holds fixed.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cjcore.contracts import PlannedPair, usable_pairs

Key = frozenset[str]


def pair_key(a: str, b: str) -> Key:
    return frozenset((a, b))


def round_rng(seed: int | None, batch_id: str, iteration: int) -> random.Random:
    """Deterministic per round: the same seed (or, without one, the same batch) gives the same pairs,
    so a coordinator that is restarted mid-round regenerates exactly what it had planned."""
    base = seed if seed is not None else int(hashlib.sha256(batch_id.encode()).hexdigest()[:12], 16)
    return random.Random(f"{base}:{iteration}")


def round_size(n_essays: int, pairs_per_essay: float, remaining_budget: int, unused_pairs: int) -> int:
    """Pairs to plan this round. When what is left unused is at most two rounds' worth, take it all now
    (a 4-essay batch compares its 6 pairs in one round instead of trickling)."""
    if remaining_budget <= 0:
        return 0
    size = max(1, math.ceil(n_essays * pairs_per_essay))
    if 0 < unused_pairs <= 2 * size:
        size = unused_pairs
    return min(size, remaining_budget)


def _orient(a: str, b: str, rng: random.Random) -> PlannedPair:
    return PlannedPair(a, b) if rng.random() < 0.5 else PlannedPair(b, a)


def first_round(
    essay_ids: Sequence[str], size: int, rng: random.Random, held: frozenset[str] = frozenset()
) -> list[PlannedPair]:
    ids = list(essay_ids)
    n = len(ids)
    size = min(size, usable_pairs(n, len(held.intersection(ids))))
    chosen: list[Key] = []
    seen: set[Key] = set()

    def take(a: str, b: str) -> None:
        k = pair_key(a, b)
        if a != b and k not in seen and len(chosen) < size and not (a in held and b in held):
            seen.add(k)
            chosen.append(k)

    order = ids[:]
    rng.shuffle(order)
    for i in range(n):  # ring: connected, every essay in two pairs
        take(order[i], order[(i + 1) % n])
    for _ in range(8):  # more random matchings keep degrees even
        if len(chosen) >= size:
            break
        rng.shuffle(order)
        for i in range(0, n - 1, 2):
            take(order[i], order[i + 1])
    if len(chosen) < size:  # dense request: fill from every remaining pair
        rest = [pair_key(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :] if pair_key(a, b) not in seen]
        rng.shuffle(rest)
        for k in rest:
            low, high = sorted(k)
            take(low, high)
    ordered = [sorted(k) for k in chosen]
    return [_orient(a, b, rng) for a, b in ordered]


def next_round(
    essay_ids: Sequence[str],
    attempted: Mapping[Key, int],
    scores: Mapping[str, float],
    ses: Mapping[str, float],
    size: int,
    rng: random.Random,
    held: frozenset[str] = frozenset(),
) -> list[PlannedPair]:
    ids = sorted(essay_ids)
    n = len(ids)
    if size <= 0 or n < 2:
        return []
    # Vectorised over the candidate pairs: in pure Python this was most of a coordinator's work per round
    # for batches of a hundred essays and more (py-spy, `bench throughput`).
    draw = np.random.default_rng(rng.getrandbits(64))
    score = np.array([scores.get(e, 0.0) for e in ids])
    se = np.array([ses.get(e, 1.0) for e in ids])
    rows, cols = _candidates(score, draw)
    if held:
        is_held = np.array([e in held for e in ids])
        allowed = ~(is_held[rows] & is_held[cols])
        rows, cols = rows[allowed], cols[allowed]
        if not len(rows):
            return []
    tried = _tried(ids, attempted, rows, cols)
    keep = tried == tried.min()
    rows, cols = rows[keep], cols[keep]
    p = 1.0 / (1.0 + np.exp(-(score[rows] - score[cols])))
    value = p * (1.0 - p) * (se[rows] ** 2 + se[cols] ** 2)
    tiebreak = draw.random(len(rows))
    order = np.lexsort((-tiebreak, -value))  # most informative first; ties in random order
    cap = max(2, math.ceil(2 * size / n) + 1)
    load = np.zeros(n, dtype=np.int64)
    picked: list[int] = []
    for k in order:
        if len(picked) >= size:
            break
        a, b = rows[k], cols[k]
        if load[a] < cap and load[b] < cap:
            picked.append(int(k))
            load[a] += 1
            load[b] += 1
    if len(picked) < size:  # the cap left budget unspent: relax it
        taken = set(picked)
        picked += [int(k) for k in order if int(k) not in taken][: size - len(picked)]
    return [_orient(ids[rows[k]], ids[cols[k]], rng) for k in picked]


# Candidate pairs for next_round: every pair while there are at most this many (n ≤ 316), else each essay's
# NEIGHBOURS nearest in score on each side plus RANDOM_PARTNERS random others, ~n·(NEIGHBOURS + RANDOM)
# pairs: memory and time grow with n, not n² (at 2,000 essays every pair would be 2 M, and an n×n count
# matrix 32 MB; at 10,000, GBs). The most informative pairs (close scores) are among the neighbours; the
# random partners keep distant essays linked.
ALL_PAIRS_UP_TO = 50_000
NEIGHBOURS = 10
RANDOM_PARTNERS = 4


def _candidates(score: np.ndarray, draw: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols), rows < cols, each pair once."""
    n = len(score)
    if n * (n - 1) // 2 <= ALL_PAIRS_UP_TO:
        return np.triu_indices(n, 1)
    by_score = np.argsort(score, kind="stable")
    near = [(by_score[:-k], by_score[k:]) for k in range(1, NEIGHBOURS + 1)]
    spread = np.repeat(np.arange(n), RANDOM_PARTNERS)
    near.append((spread, draw.integers(0, n, len(spread))))
    i, j = np.concatenate([p[0] for p in near]), np.concatenate([p[1] for p in near])
    i, j = np.minimum(i, j), np.maximum(i, j)
    codes = np.unique((i * n + j)[i != j])
    return codes // n, codes % n


def _tried(ids: Sequence[str], attempted: Mapping[Key, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """How often each candidate pair has been attempted (0 for a pair never tried)."""
    n = len(ids)
    index = {e: i for i, e in enumerate(ids)}
    codes, counts = [], []
    for key, c in attempted.items():
        pair = sorted(index.get(e, -1) for e in key)
        if len(pair) == 2 and pair[0] >= 0:
            codes.append(pair[0] * n + pair[1])
            counts.append(c)
    tried = np.zeros(len(rows), dtype=np.int64)
    if codes:
        order = np.argsort(codes)
        known, known_counts = np.asarray(codes)[order], np.asarray(counts)[order]
        want = rows * n + cols
        at = np.clip(np.searchsorted(known, want), 0, len(known) - 1)
        hit = known[at] == want
        tried[hit] = known_counts[at[hit]]
    return tried


def attempt_counts(pairs: Iterable[tuple[str, str]]) -> Counter[Key]:
    return Counter(pair_key(a, b) for a, b in pairs)
