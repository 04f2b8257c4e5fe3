"""Creating the long-lived actors of a deployment and the per-batch coordinators (all detached, in the
settings' namespace, under their DESIGN §5 names)."""

from __future__ import annotations

import ray

from actors import names
from cjcore.settings import Settings


def ensure_coordinator(batch_id: str, settings: Settings) -> ray.actor.ActorHandle:
    """The batch's coordinator, created from the database if it is not running (idempotent)."""
    from actors.coordinator import BatchCoordinator

    return BatchCoordinator.options(  # type: ignore[attr-defined]
        name=names.coordinator(batch_id),
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(batch_id, settings)


def deploy(settings: Settings) -> dict[str, ray.actor.ActorHandle]:
    """Start (or find) the provider pool, the scoring pool and the Supervisor; wait until they answer."""
    from actors.limiter import RateLimiter
    from actors.provider_worker import ProviderWorker
    from actors.scoring import ScoringActor
    from actors.supervisor import Supervisor

    common = {"namespace": settings.ray_namespace, "lifetime": "detached", "get_if_exists": True}
    handles: dict[str, ray.actor.ActorHandle] = {}
    handles[names.LIMITER] = RateLimiter.options(name=names.LIMITER, **common).remote(settings.limits())
    ray.get(handles[names.LIMITER].__ray_ready__.remote())  # workers look it up in their constructors
    for i in range(settings.workers):
        handles[names.provider(i)] = ProviderWorker.options(name=names.provider(i), **common).remote(i, settings)
    for i in range(settings.scorers):
        handles[names.scoring(i)] = ScoringActor.options(name=names.scoring(i), **common).remote()
    handles[names.SUPERVISOR] = Supervisor.options(name=names.SUPERVISOR, **common).remote(settings)
    ray.get([h.__ray_ready__.remote() for h in handles.values()])
    return handles


def teardown(settings: Settings) -> None:
    """Kill the long-lived actors of the settings' namespace (tests, and `down` of a shared cluster)."""
    wanted = [names.LIMITER, names.SUPERVISOR, *map(names.provider, range(settings.workers)),
              *map(names.scoring, range(settings.scorers))]
    for name in wanted:
        try:
            ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=True)
        except ValueError:
            pass
