"""The HTTP API and pages served on the session's Ray by Ray Serve (DESIGN §4.7), over real HTTP: tokens,
bad input by field, the body bound, several batches at once, polling to the end, export, cancel, the pages'
cookie, and a client gone mid-request."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from cjcore.settings import Settings
from simprovider.server import SimProvider
from tests.conftest import TEST_MAX_REQUEST_BYTES, HttpApi
from tests.helpers import essays, sql, wait_until
from web import tokens


def _client(api: HttpApi, token: str | None = None) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=api.url, headers=headers, timeout=60, follow_redirects=False)


@pytest.fixture
def api(http_api: HttpApi) -> Iterator[httpx.Client]:
    with _client(http_api, http_api.token) as client:
        yield client


def _request(batch_id: str, n: int = 4, **extra: Any) -> dict[str, Any]:
    return {"batch_id": batch_id, "essays": essays(n, prefix=f"{batch_id}-"), "max_comparisons": 6, **extra}


def _stored(settings: Settings, batch_id: str) -> int:
    return int(sql(settings, "SELECT count(*) FROM cj_batches WHERE batch_id = :b", b=batch_id)[0][0])


def _until_terminal(api: httpx.Client, batch_id: str, timeout_s: float = 120) -> dict[str, Any]:
    body: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal body
        body = api.get(f"/v1/batches/{batch_id}").json()
        return body["state"] in ("COMPLETED", "FAILED", "CANCELLED")

    wait_until(ended, timeout_s, f"batch {batch_id} to end")
    return body


def test_every_v1_route_needs_the_bearer_token(http_api: HttpApi) -> None:
    with _client(http_api) as anonymous, _client(http_api, "not-the-token") as wrong:
        for client in (anonymous, wrong):
            for method, path in [("GET", "/v1/batches"), ("GET", "/v1/batches/x"), ("POST", "/v1/batches/x/cancel"),
                                 ("GET", "/v1/batches/x/export"), ("GET", "/v1/anchor-sets")]:
                response = client.request(method, path)
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
            response = client.post("/v1/batches", json=_request("http-unauth"))
            assert response.status_code == 401
        # The pages' cookie opens pages only: sent to the API, it is refused.
        anonymous.cookies.set(tokens.PAGE_COOKIE, tokens.page_cookie(http_api.token))
        assert anonymous.get("/v1/batches").status_code == 401
        assert anonymous.get("/healthz").json() == {"ok": True}  # liveness needs no token
    assert _stored(http_api.settings, "http-unauth") == 0


@pytest.mark.parametrize("change, field", [
    ({"essays": []}, "essays"),
    ({"max_comparisons": 0}, "max_comparisons"),
    ({"llm": {"temperature": 3}}, "llm.temperature"),
    ({"essays": [{"essay_id": "a", "text": "x"}, {"essay_id": "a", "text": "y"}]}, "essays"),
])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(
        api: httpx.Client, http_api: HttpApi, change: dict[str, Any], field: str) -> None:
    batch_id = f"http-bad-{field.replace('.', '-')}-{len(json.dumps(change))}"
    response = api.post("/v1/batches", json={**_request(batch_id), **change})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert _stored(http_api.settings, batch_id) == 0


def test_an_essay_over_the_deployments_bound_is_422_by_its_index(api: httpx.Client, http_api: HttpApi) -> None:
    request = _request("http-long-essay")
    request["essays"][2]["text"] = "w" * (http_api.settings.max_essay_chars + 1)
    response = api.post("/v1/batches", json=request)
    assert response.status_code == 422 and response.json()["field"] == "essays[2].text"
    assert _stored(http_api.settings, "http-long-essay") == 0


def test_a_body_over_the_bound_is_413_before_it_is_parsed(api: httpx.Client, http_api: HttpApi) -> None:
    request = _request("http-too-large")
    request["essays"][0]["text"] = "w" * TEST_MAX_REQUEST_BYTES
    response = api.post("/v1/batches", json=request)  # refused by its Content-Length
    assert response.status_code == 413

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        yield b'{"batch_id": "http-too-large", "essays": ['
        for _ in range(TEST_MAX_REQUEST_BYTES // 10_000 + 1):
            yield b'{"essay_id": "e", "text": "' + b"w" * 10_000 + b'"},'
        yield b"]}"

    response = api.post("/v1/batches", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "CJ_MAX_REQUEST_BYTES" in response.json()["message"]
    assert _stored(http_api.settings, "http-too-large") == 0


def test_several_batches_in_one_post_are_all_stored_or_none(api: httpx.Client, http_api: HttpApi) -> None:
    bad = _request("http-many-bad-2")
    bad["essays"][1]["text"] = ""
    response = api.post("/v1/batches", json=[_request("http-many-bad-1"), bad])
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith("[1].essays[1]")
    assert _stored(http_api.settings, "http-many-bad-1") == 0  # the good one is not stored either

    response = api.post("/v1/batches", json=[_request("http-many-1"), _request("http-many-2")])
    assert response.status_code == 201, response.text
    assert response.json() == [{"batch_id": "http-many-1", "state": "QUEUED"},
                               {"batch_id": "http-many-2", "state": "QUEUED"}]
    again = api.post("/v1/batches", json=_request("http-many-1"))
    assert again.status_code == 409 and again.json()["correlation_id"] in (None, "http-many-1")
    for batch_id in ("http-many-1", "http-many-2"):
        assert _until_terminal(api, batch_id)["state"] == "COMPLETED"


def test_a_batch_polled_to_completed_then_exported(api: httpx.Client, http_api: HttpApi) -> None:
    anchors = {"http-poll-00": "A", "http-poll-05": "F"}
    response = api.post("/v1/batches", json={"batch_id": "http-poll", "max_comparisons": 30,
                                             "essays": essays(6, prefix="http-poll-", anchors=anchors)})
    assert response.status_code == 201
    listed = api.get("/v1/batches", params={"newest": 5}).json()
    assert "http-poll" in [row["batch_id"] for row in listed]
    result = _until_terminal(api, "http-poll")
    assert result["state"] == "COMPLETED"
    assert sorted(r["essay_id"] for r in result["rankings"]) == [f"http-poll-{i:02d}" for i in range(6)]
    assert result["counters"]["completed"] == result["counters"]["submitted"]

    exported = api.get("/v1/batches/http-poll/export").json()
    assert exported["result"]["batch_id"] == "http-poll"
    assert len(exported["attempts"]) == result["counters"]["submitted"]
    csv = api.get("/v1/batches/http-poll/export", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith("record,batch_id") and len(lines) == 1 + 6 + 4 + len(exported["attempts"])
    assert api.get("/v1/batches/nope").status_code == 404
    assert api.get("/v1/batches/http-poll/export", params={"format": "xml"}).status_code == 422


def test_a_running_batch_shows_progress_then_is_cancelled(
        api: httpx.Client, http_api: HttpApi, sim: SimProvider) -> None:
    sim.configure(latency_ms=60_000)  # every call waits: the batch stays in progress until cancelled
    assert api.post("/v1/batches", json=_request("http-cancel", n=6)).status_code == 201
    wait_until(lambda: api.get("/v1/batches/http-cancel").json().get("in_flight", 0) > 0, 60, "calls in flight")
    running = api.get("/v1/batches/http-cancel").json()
    assert running["state"] not in ("COMPLETED", "FAILED", "CANCELLED") and "rankings" not in running

    page = api.get("/batches/http-cancel")
    assert page.status_code == 200
    assert '<meta http-equiv="refresh"' in page.text and 'id="progress"' in page.text

    response = api.post("/v1/batches/http-cancel/cancel")
    assert response.status_code == 200 and response.json()["batch_id"] == "http-cancel"
    assert _until_terminal(api, "http-cancel")["state"] == "CANCELLED"
    again = api.post("/v1/batches/http-cancel/cancel").json()
    assert again["state"] == "CANCELLED" and "already CANCELLED" in again["message"]
    assert api.post("/v1/batches/nope/cancel").status_code == 404


def test_the_pages_token_becomes_a_cookie_and_leaves_the_address(http_api: HttpApi) -> None:
    with _client(http_api) as browser:
        assert browser.get("/batches").status_code == 401
        assert browser.get("/batches?token=wrong").status_code == 401
        response = browser.get("/batches", params={"token": http_api.token})
        assert response.status_code == 303 and response.headers["location"] == "/batches"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and http_api.token not in cookie
        listed = browser.get("/batches")  # the cookie, kept by the client, opens the pages
        assert listed.status_code == 200 and "<table" in listed.text
        assert browser.get("/v1/batches").status_code == 401  # and not the API


def test_a_client_gone_mid_body_stores_nothing(api: httpx.Client, http_api: HttpApi) -> None:
    body = json.dumps(_request("http-gone")).encode()
    host, port = urlsplit(http_api.url).hostname, urlsplit(http_api.url).port
    with socket.create_connection((host, port)) as s:
        s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + http_api.token.encode() + b"\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[: len(body) // 2])
    # The same submission, whole, is then taken: nothing of the first was kept to block it.
    response = api.post("/v1/batches", json=_request("http-gone"))
    assert response.status_code == 201
    assert _until_terminal(api, "http-gone")["state"] == "COMPLETED"


def test_openapi_describes_the_contract(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    for path in ["/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/cancel",
                 "/v1/batches/{batch_id}/export", "/v1/anchor-sets", "/v1/anchor-sets/{anchor_set_id}"]:
        assert path in doc["paths"], path
    request_schema = doc["components"]["schemas"]["BatchRequest"]
    assert {"essays", "max_comparisons", "llm"} <= set(request_schema["properties"])
    assert "Essay" in doc["components"]["schemas"]


def test_the_token_is_in_no_log(api: httpx.Client, http_api: HttpApi) -> None:
    import ray

    with _client(http_api) as browser:
        browser.get("/batches", params={"token": http_api.token})
    api.get("/v1/batches")
    logs = ray._private.worker._global_node.get_logs_dir_path()  # type: ignore[attr-defined]
    leaked = [p for p in Path(logs).rglob("*") if p.is_file() and http_api.token.encode() in p.read_bytes()]
    assert leaked == []
