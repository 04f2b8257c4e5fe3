"""A three-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head and two worker nodes),
batches run across it, and one worker node removed mid-run. Run as its own process by
tests/test_multinode.py, since a process joins one Ray cluster only and the test session has its own.

    python -m tests.cluster_scenario PG_URL  → one JSON line on stdout
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections import Counter
from typing import Any

import ray
from pydantic import SecretStr
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from actors.deployment import deploy
from cjcore.settings import Settings
from driver.api import CJClient
from driver.runtime import init_ray
from simprovider.server import SimConfig, SimProvider
from tests.helpers import essays

BATCHES = 4


def _placement(address: str, namespace: str) -> dict[str, list[str]]:
    """Node id → names of this deployment's live actors there."""
    out: dict[str, list[str]] = {}
    for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=10_000):
        if a.ray_namespace == namespace and a.name and a.node_id:
            out.setdefault(a.node_id, []).append(a.name)
    return out


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


def main(pg_url: str) -> dict[str, Any]:
    sim = SimProvider(SimConfig(seed=3, latency_ms=120))  # slow enough that the batches are mid-run
    base_url = sim.start_in_thread()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    settings = Settings(
        database_url=pg_url, provider_base_url=base_url, anthropic_api_key=SecretStr("sk-cluster-test"),
        ray_address=cluster.address, ray_namespace=f"cj-cluster-{secrets.token_hex(3)}",
        workers=3, scorers=2, metrics_port=0, provider_timeout_s=5, result_delivery_timeout_s=30,
        # Calls lost with the removed node are expired and retried within seconds, not minutes.
        supervisor_interval_s=1.0, max_processing_seconds=6.0, batch_idle_s=6.0,
    )
    init_ray(settings, local=False)
    report: dict[str, Any] = {"nodes": len([n for n in ray.nodes() if n["Alive"]])}
    deploy(settings)

    async def run() -> None:
        async with CJClient(settings) as client:
            ids = await asyncio.gather(*(client.submit({"essays": essays(8, f"c{i}-"), "max_comparisons": 28})
                                         for i in range(BATCHES)))

            async def some_results() -> bool:
                return (await client.metrics.progress_of(ids))[1] >= 30

            await _until(some_results, 120, "results from every node")
            before = _placement(cluster.address, settings.ray_namespace)
            worker_ids = {w.node_id for w in workers}
            victim_id = max(worker_ids, key=lambda n: len(before.get(n, [])))
            victim = next(w for w in workers if w.node_id == victim_id)
            _, recorded, _ = await client.metrics.progress_of(ids)
            report.update(
                nodes_with_actors=len(before),
                actors_per_node=sorted(len(v) for v in before.values()),
                on_removed_node=sorted(before.get(victim_id, [])),
                results_before_removal=recorded,
            )
            cluster.remove_node(victim)
            results = await asyncio.gather(*(client.wait(b, timeout_s=240, poll_s=0.5) for b in ids))
            report["states"] = dict(Counter(r.state.value for r in results))
            report["invariant_violations"] = {b: v for b in ids if (v := await client.metrics.check_invariants(b))}
            report["events_per_batch"] = [len(await client.reads.events(b)) for b in ids]
            # The long-lived actors of the removed node (coordinator hosts among them), restarted by Ray on the
            # remaining nodes.
            placed = _placement(cluster.address, settings.ray_namespace)
            after = {n: node for node, names_ in placed.items() for n in names_}
            report["removed_node_pool_actors_now"] = {
                n: ("elsewhere" if after.get(n) not in (None, victim_id) else "missing")
                for n in report["on_removed_node"]}

    try:
        asyncio.run(run())
    finally:
        ray.shutdown()
        cluster.shutdown()
        sim.stop_thread()
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
