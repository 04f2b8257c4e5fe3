"""The report page as a person sees it: a real headless Chromium (Debian's, driven by Playwright) opens the page
of a completed batch with the token once, and finds every essay on it and the charts drawn, with no request
leaving the deployment. The screenshot goes to the test's temporary directory, never the repository."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import HttpApi
from tests.helpers import essays, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As the probe of this machine kind found: without these, Chromium's own background connections are refused by a
# closed network, many at a time, and slow every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CJ_REQUIRE_CHROMIUM"):
            pytest.fail("CJ_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def test_the_report_page_shows_every_essay_and_draws_its_charts(
        http_api: HttpApi, browser: Any, tmp_path: Any) -> None:
    batch_id = "page-eng"
    anchors = {f"{batch_id}-00": "A", f"{batch_id}-03": "C", f"{batch_id}-07": "F"}
    request: dict[str, Any] = {"batch_id": batch_id, "max_comparisons": 40,
                               "essays": essays(8, prefix=f"{batch_id}-", anchors=anchors)}
    request["essays"][5]["essay_id"] = "<b>not bold</b>"  # a name is text on the page, never markup
    ids = [e["essay_id"] for e in request["essays"]]
    with httpx.Client(base_url=http_api.url, headers={"Authorization": f"Bearer {http_api.token}"}) as api:
        assert api.post("/v1/batches", json=request).status_code == 201
        wait_until(lambda: api.get(f"/v1/batches/{batch_id}").json()["state"] == "COMPLETED", 120, "COMPLETED")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{http_api.url}/batches/{batch_id}?token={http_api.token}")

    assert page.url == f"{http_api.url}/batches/{batch_id}"  # the token left the address
    assert page.locator("#state").inner_text() == "COMPLETED"
    rows = page.locator("#essays tbody tr td.essay-id").all_inner_texts()
    assert sorted(rows) == sorted(ids)
    chart = page.locator("#ranking-chart svg")
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 8 * 10
    chart_text = chart.locator("text").all_text_contents()
    assert set(ids) <= set(chart_text)  # each essay labels its row of the chart
    assert chart.locator("path[d]").count() >= len(ids)  # a mark per essay, drawn
    assert page.locator("#grades-chart svg").count() == 1 and page.locator("#comparisons-chart svg").count() == 1
    assert page.locator("b", has_text="not bold").count() == 0
    assert all(url.startswith(http_api.url) for url in requested), requested  # self-contained: nothing fetched
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    context.close()
