"""The HTTP API and pages (DESIGN §4.7), a thin shell over driver.api.CJClient: every route validates, submits,
reads or cancels through the same functions as the command line, with the same pydantic models.

    app = create_app(Context(client, token), max_body_size)     # as web/serving.py's replica does

`/v1/*` takes `Authorization: Bearer <token>` only; pages take that or their cookie (set by `?token=`, then
dropped from the address by a redirect), so no page can be made to submit or cancel for a visitor.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, TypeAdapter
from starlette.exceptions import HTTPException

from cjcore.contracts import TERMINAL_STATES, BatchRequest, BatchResult, BatchState, parse_batch_request
from cjcore.errors import BatchExists, BatchNotFound, CJError, DeploymentNotFound, InvalidRequest
from driver.api import CJClient
from web import page, tokens

LIST_NEWEST = 1_000  # batches on the list page and the default of GET /v1/batches


@dataclass
class Context:
    client: CJClient
    token: str

    @property
    def cookie(self) -> str:
        return tokens.page_cookie(self.token)


class Accepted(BaseModel):
    batch_id: str
    state: BatchState


class Cancelled(BaseModel):
    batch_id: str
    state: BatchState
    message: str


class Problem(BaseModel):
    """Every error: what went wrong, the field for bad input, the batch for one that has one."""

    error: str
    message: str
    field: str | None = None
    correlation_id: str | None = None


class Unauthorised(Exception):
    pass


class NotFound(CJError):
    """Something other than a batch not found (an anchor set)."""


class PageUnauthorised(Exception):
    pass


def context_of(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]


def _bearer_ok(request: Request, c: Context) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and tokens.same(given.strip(), c.token)


def bearer(request: Request, c: Context = Depends(context_of)) -> Context:
    """The `/v1` API: the bearer header only (no cookie: a page cannot act for its visitor)."""
    if not _bearer_ok(request, c):
        raise Unauthorised()
    return c


def viewer(request: Request, c: Context = Depends(context_of)) -> Context:
    """The pages: the bearer header or the pages' cookie."""
    if _bearer_ok(request, c) or tokens.same(request.cookies.get(tokens.PAGE_COOKIE), c.cookie):
        return c
    raise PageUnauthorised()


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest("request", f"not valid JSON ({exc})") from None


def _jsonable(value: Any) -> Any:
    """Rows with datetimes and decimals as JSON (as `status --json` prints them)."""
    return json.loads(json.dumps(value, default=str))


api = APIRouter(prefix="/v1", dependencies=[Depends(bearer)], responses={401: {"model": Problem}})
pages = APIRouter(tags=["pages"])


@api.post("/batches", status_code=201, tags=["batches"],
          openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
              "anyOf": [{"$ref": "#/components/schemas/BatchRequest"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/BatchRequest"}}]}}}}},
          responses={422: {"model": Problem}, 413: {"model": Problem}, 409: {"model": Problem}})
async def submit(request: Request, c: Context = Depends(context_of)) -> Accepted | list[Accepted]:
    """One batch request (DESIGN §4.1), or a list: all stored QUEUED or none. Bad input is 422 naming the field,
    with nothing stored."""
    data = await _json_body(request)
    several = isinstance(data, list)
    items = data if several else [data]
    if not items:
        raise InvalidRequest("request", "an empty list: nothing to submit")
    s = c.client.settings
    requests = []
    for i, item in enumerate(items):
        try:
            requests.append(parse_batch_request(item, s.max_essays_per_batch, s.max_essay_chars))
        except InvalidRequest as exc:
            if not several:
                raise
            raise InvalidRequest(f"[{i}].{exc.field}", str(exc).split(": ", 1)[-1]) from None
    # Shielded: a client gone once its body is in does not cut a submission short (one transaction either way;
    # shielded, it is stored, and a retry with its batch_id is told it exists).
    ids = await asyncio.shield(c.client.submit_many(requests))
    accepted = [Accepted(batch_id=b, state=BatchState.QUEUED) for b in ids]
    return accepted if several else accepted[0]


@api.get("/batches", tags=["batches"])
async def batches(newest: int = Query(LIST_NEWEST, ge=1, le=100_000),
                  c: Context = Depends(context_of)) -> list[dict[str, Any]]:
    """The `status` list (cj_batch_health), the newest `newest` batches first."""
    return _jsonable(await c.client.batches(newest=newest))  # type: ignore[no-any-return]


@api.get("/batches/{batch_id}", tags=["batches"], responses={404: {"model": Problem}})
async def batch(batch_id: str, c: Context = Depends(context_of)) -> BatchResult | dict[str, Any]:
    """The result (DESIGN §4.2) once the batch has ended; before, its status row with progress."""
    state, _ = await c.client.status(batch_id)
    if state in TERMINAL_STATES:
        return await c.client.result(batch_id)
    return _jsonable((await c.client.health(batch_id))[0])  # type: ignore[no-any-return]


@api.post("/batches/{batch_id}/cancel", tags=["batches"], responses={404: {"model": Problem}})
async def cancel(batch_id: str, c: Context = Depends(context_of)) -> Cancelled:
    """As `launch.py cancel`."""
    state, message = await asyncio.shield(c.client.cancel_explained(batch_id))
    return Cancelled(batch_id=batch_id, state=state, message=message)


@api.get("/batches/{batch_id}/export", tags=["batches"], responses={404: {"model": Problem}})
async def export_(batch_id: str, format: Literal["json", "csv"] = "json",
                  c: Context = Depends(context_of)) -> Response:
    """The decision record: the result and every attempt (as `launch.py export`)."""
    from driver import export

    doc = await c.client.export(batch_id)
    if format == "csv":
        return PlainTextResponse(export.as_csv(doc), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{batch_id}.csv"'})
    return Response(export.as_json(doc), media_type="application/json")


@api.get("/anchor-sets", tags=["anchor sets"])
async def anchor_sets(c: Context = Depends(context_of)) -> list[dict[str, Any]]:
    return _jsonable(await c.client.rulers.list())  # type: ignore[no-any-return]


@api.post("/anchor-sets", status_code=201, tags=["anchor sets"], responses={422: {"model": Problem}})
async def register_anchor_set(request: Request, c: Context = Depends(context_of)) -> dict[str, Any]:
    """Register and calibrate an anchor set (DESIGN §4.6): answers once its calibration batch has completed
    (minutes). Shielded: a client gone meanwhile does not stop it."""
    data = await _json_body(request)
    return _jsonable(await asyncio.shield(c.client.register_anchor_set(data)))  # type: ignore[no-any-return]


@api.get("/anchor-sets/{anchor_set_id}", tags=["anchor sets"], responses={404: {"model": Problem}})
async def anchor_set(anchor_set_id: str, c: Context = Depends(context_of)) -> dict[str, Any]:
    shown = await c.client.rulers.show(anchor_set_id)
    if shown is None:
        raise NotFound(f"no anchor set {anchor_set_id!r} is registered")
    return _jsonable(shown)  # type: ignore[no-any-return]


def _token_to_cookie(request: Request) -> Response | None:
    """`?token=` once: answered with the pages' cookie and a redirect to the address without it."""
    if "token" not in request.query_params:
        return None
    c = context_of(request)
    if not tokens.same(request.query_params["token"], c.token):
        raise PageUnauthorised()
    response = RedirectResponse(request.url.remove_query_params("token").path, status_code=303)
    response.set_cookie(tokens.PAGE_COOKIE, c.cookie, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@pages.get("/batches/{batch_id}", response_class=HTMLResponse)
async def report_page(request: Request, batch_id: str) -> Response:
    """The batch's report (ranking, grades, reliability, misfit, cost; progress while it runs)."""
    if (redirect := _token_to_cookie(request)) is not None:
        return redirect
    c = viewer(request, context_of(request))
    return HTMLResponse(page.report_page(await c.client.report(batch_id), live=True))


@pages.get("/batches", response_class=HTMLResponse)
async def list_page(request: Request) -> Response:
    """Every batch, newest first (the newest 1,000)."""
    if (redirect := _token_to_cookie(request)) is not None:
        return redirect
    c = viewer(request, context_of(request))
    return HTMLResponse(page.list_page(await c.client.batches(newest=LIST_NEWEST), LIST_NEWEST))


@pages.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, bool]:
    """Liveness, without a token."""
    return {"ok": True}


ERRORS: dict[type[CJError], tuple[int, str]] = {
    InvalidRequest: (422, "invalid_request"), BatchNotFound: (404, "not_found"), NotFound: (404, "not_found"),
    BatchExists: (409, "exists"), DeploymentNotFound: (503, "no_deployment")}


async def _cj_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CJError)
    status, kind = ERRORS.get(type(exc), (500, "internal"))
    return JSONResponse(Problem(error=kind, message=str(exc), field=getattr(exc, "field", None),
                                correlation_id=exc.correlation_id).model_dump(), status_code=status)


async def _unauthorised(request: Request, exc: Exception) -> Response:
    return JSONResponse(Problem(error="unauthorised", message="a valid `Authorization: Bearer <token>` header is "
                                "needed (CJ_API_TOKEN, or the token `launch.py up` printed)").model_dump(),
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _page_unauthorised(request: Request, exc: Exception) -> Response:
    return HTMLResponse(page.unauthorised_page(), status_code=401)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:  # a body over the bound, counted as it arrived
        limit = request.app.state.max_body_size
        return JSONResponse(Problem(error="too_large", message=f"the request body is over {limit:,} bytes "
                                    "(CJ_MAX_REQUEST_BYTES)").model_dump(), status_code=413)
    return await http_exception_handler(request, exc)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the request model the routes parse themselves (to name a bad field as the command
    line does) added to its components."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        defs = TypeAdapter(BatchRequest).json_schema(ref_template="#/components/schemas/{model}")
        nested = defs.pop("$defs", {})
        schema.setdefault("components", {}).setdefault("schemas", {}).update({**nested, "BatchRequest": defs})
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(context: Context, max_body_size: int) -> FastAPI:
    """The app; `max_body_size` (CJ_MAX_REQUEST_BYTES): a longer body is 413 before anything reads it (FastAPI's
    own limit, by Content-Length or counted as it arrives). A body cut off by a client gone mid-request ends in
    Starlette's ClientDisconnect before any route has it, so nothing is stored."""
    app = FastAPI(title="Comparative judgement", version="1", summary="LLM comparative judgement on Ray (DESIGN §4)",
                  max_body_size=max_body_size)
    app.state.context, app.state.max_body_size = context, max_body_size
    app.include_router(api)
    app.include_router(pages)
    app.add_exception_handler(CJError, _cj_error)
    app.add_exception_handler(Unauthorised, _unauthorised)
    app.add_exception_handler(PageUnauthorised, _page_unauthorised)
    app.add_exception_handler(HTTPException, _http_error)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
