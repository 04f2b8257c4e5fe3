"""Getting or creating a batch's coordinator (`cj-batch-<id>`, detached, in the settings' namespace)."""

from __future__ import annotations

import ray

from actors import names
from cjcore.settings import Settings

# Coordinators, provider workers and scorers ask for no CPU, so Ray's default policy would keep them all
# on the node that creates them; SPREAD puts them across the cluster's nodes (no node affinity).
SPREAD = "SPREAD"


def ensure_coordinator(batch_id: str, settings: Settings) -> ray.actor.ActorHandle:
    """The batch's coordinator, created from the database if it is not running (idempotent: a named actor
    got or created)."""
    from actors.coordinator import BatchCoordinator

    return BatchCoordinator.options(  # type: ignore[attr-defined]
        name=names.coordinator(batch_id),
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=SPREAD,
    ).remote(batch_id, settings.for_actors())
