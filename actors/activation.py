"""Where a batch's messages go: its coordinator host (`cj-coordinators-<i>`, in the settings' namespace)."""

from __future__ import annotations

import ray

from actors import names
from cjcore.settings import Settings

# Hosts, provider workers and scorers ask for no CPU, so Ray's default policy would keep them all on the node
# that creates them; SPREAD puts them across the cluster's nodes (no node affinity).
SPREAD = "SPREAD"


def host_for(batch_id: str, settings: Settings) -> ray.actor.ActorHandle:
    """The coordinator host that holds (or will activate) the batch. `settings.coordinator_hosts` is the
    deployment's count (resolved at `deploy`, given to every actor; a driver asks admission for it)."""
    assert settings.coordinator_hosts, "the deployment's host count is resolved before routing"
    return ray.get_actor(names.coordinator_host(names.host_index(batch_id, settings.coordinator_hosts)),
                         namespace=settings.ray_namespace)
