"""The deployment's processes on this node, grouped by what they are (for `bench throughput`'s CPU table
and `loadtest`'s memory figures)."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import Any

# Process groups by command line. Ray titles an actor's process `ray::<Class>[.<method>]`, and
# `ray::<actor name>:<Class>.__init__` while its constructor runs; a worker not yet an actor is `ray::IDLE`.
_ACTOR = re.compile(r"^ray::(?:[\w.-]+:)?(\w+)")
_ACTOR_GROUPS = {
    "CoordinatorHost": "coordinator hosts",
    "ProviderWorker": "provider workers (anthropic SDK)",
    "ScoringActor": "scoring (Bradley-Terry)",
    "RateLimiter": "rate limiter",
    "MetricsServer": "metrics, supervisor, outbox", "Supervisor": "metrics, supervisor, outbox",
    "OutboxPublisher": "metrics, supervisor, outbox",
}
_RAY_SYSTEM = re.compile(r"raylet|gcs_server|dashboard|log_monitor|runtime_env|ray/_private|ray_client|^ray::")
_UNSETTLED = re.compile(r"default_worker\.py|^ray::IDLE")


def group_of(proc: Any, me: int) -> tuple[str | None, bool]:
    """The process's group, and whether that is final (a Ray worker turns into an actor later)."""
    if proc.pid == me:
        return "driver + simulated provider (thread)", True
    try:
        cmd = " ".join(proc.cmdline()) or proc.name()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return None, False
    if cmd.startswith(("ray::ServeController", "ray::ProxyActor", "ray::ServeReplica")):
        return "HTTP (Ray Serve)", True
    actor = _ACTOR.match(cmd)
    if actor and actor.group(1) in _ACTOR_GROUPS:
        return _ACTOR_GROUPS[actor.group(1)], True
    if "postgres" in cmd:
        return "PostgreSQL", True
    if _RAY_SYSTEM.search(cmd):
        return "Ray system", not _UNSETTLED.search(cmd)
    return None, True


class ProcessGroups:
    """`group_of` with each settled answer kept by pid: reading every command line on every sample was
    most of a sampler's cost."""

    def __init__(self) -> None:
        self._me = os.getpid()
        self._settled: dict[int, str | None] = {}

    def of(self, proc: Any) -> str | None:
        if proc.pid in self._settled:
            return self._settled[proc.pid]
        group, final = group_of(proc, self._me)
        if final:
            self._settled[proc.pid] = group
        return group


@dataclass
class MemoryFigures:
    # Memory in use on this node (total − available, so shared pages count once), before and at the peak.
    baseline_mb: float = 0.0
    peak_mb: float = 0.0
    coordinator_private_mb: float = 0.0  # mean resident minus shared memory of one coordinator host


async def sample_memory(stop: asyncio.Event, every_s: float = 1.0) -> MemoryFigures:
    """Memory in use on this node until `stop`, with the coordinator hosts measured on their own (resident
    minus shared)."""
    import psutil

    out = MemoryFigures()
    private: list[float] = []
    groups = ProcessGroups()
    first = True
    while True:
        vm = psutil.virtual_memory()
        used = float(vm.total - vm.available)
        coordinators = []
        for proc in psutil.process_iter():
            if groups.of(proc) != "coordinator hosts":
                continue
            try:
                mem = proc.memory_info()
            except psutil.Error:
                continue
            coordinators.append((mem.rss - mem.shared) / 2**20)
        if first:
            out.baseline_mb, first = used / 2**20, False
        out.peak_mb = max(out.peak_mb, used / 2**20)
        private += coordinators
        if stop.is_set():
            break
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
    out.coordinator_private_mb = sum(private) / len(private) if private else 0.0
    return out
