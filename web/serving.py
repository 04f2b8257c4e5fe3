"""The HTTP layer on the cluster: one Ray Serve application (`<namespace>-http`, one replica on the head node,
no CPU reserved) whose ingress is web.app's FastAPI app. `up` starts it, `down` deletes it.

The replica is given the settings actors get (no secret); it reads the database password from its node's
environment and the API token from CJ_API_TOKEN there or the state directory's file (web/tokens.py).
"""

from __future__ import annotations

import logging
import threading

from cjcore.settings import Settings
from driver.api import CJClient
from web import page, tokens
from web.app import Context, create_app


def app_name(settings: Settings) -> str:
    return f"{settings.ray_namespace}-http"


def _deployment():  # type: ignore[no-untyped-def]
    from ray import serve

    @serve.deployment(num_replicas=1, max_ongoing_requests=256,
                      ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}})
    @serve.ingress()
    class HttpApi:
        def __init__(self, settings: Settings):
            resolved = settings.model_copy(update={"database_url": settings.database_url_value()})
            self.context = Context(CJClient(resolved), tokens.read_token(resolved))
            self.max_body_size = settings.max_request_bytes
            threading.Thread(target=page.warm_up, daemon=True).start()

        def __serve_build_asgi_app__(self):  # type: ignore[no-untyped-def]
            """Serve builds the app after the constructor, on the replica."""
            return create_app(self.context, self.max_body_size)

    return HttpApi


def _serve(quiet: bool):  # type: ignore[no-untyped-def]
    """Ray Serve's API; `quiet`: without its INFO lines in this process (its import sets its logger to INFO)."""
    from ray import serve

    if quiet:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    return serve


def start(settings: Settings, quiet: bool = False) -> str:
    """Serve the API and pages at CJ_HTTP_HOST:CJ_HTTP_PORT (Serve's proxy on the head node); its URL."""
    serve = _serve(quiet)

    serve.start(http_options={"host": settings.http_host, "port": settings.http_port}, proxy_location="HeadOnly")
    serve.run(application(settings), name=app_name(settings), route_prefix="/", blocking=False)
    return url(settings)


def application(settings: Settings):  # type: ignore[no-untyped-def]
    """The Serve application, bound to the settings actors get: what Serve keeps of it holds no secret."""
    return _deployment().options(name=app_name(settings)).bind(settings.for_actors())


def stop(settings: Settings, quiet: bool = False) -> None:
    serve = _serve(quiet)

    try:
        serve.delete(app_name(settings))
    except Exception:  # noqa: BLE001 - no Serve on the cluster: nothing to stop
        pass


def url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return f"http://{host}:{settings.http_port}"
