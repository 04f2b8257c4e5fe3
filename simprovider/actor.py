"""The simulated provider as a detached Ray actor, so `launch.py up` can keep one running."""

from __future__ import annotations

from typing import Any

import ray

from simprovider.server import SimConfig, SimProvider

NAME = "cj-sim-provider"


@ray.remote(num_cpus=0, max_restarts=-1)
class SimProviderActor:
    async def __init__(self, config: dict[str, Any], port: int):  # type: ignore[misc]  # Ray awaits async constructors
        self._sim = SimProvider(SimConfig(**config))
        self._port = await self._sim.start("127.0.0.1", port)

    async def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def stats(self) -> dict[str, Any]:
        return dict(self._sim.stats)
