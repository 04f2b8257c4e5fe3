"""The report and list pages as self-contained HTML: Jinja2 templates (escaping every value) and the charts'
Vega-Lite specifications rendered to inline SVG by vl-convert, in this process, with no network."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cjcore.report import Report

REFRESH_S = 5  # a running batch's page reloads itself this often


@functools.cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("web", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=2: "" if v is None else f"{v:.{d}f}"
    env.filters["pct"] = lambda v: "" if v is None else f"{v:.0%}"
    return env


def svg(spec: dict[str, Any]) -> Markup:
    """A chart as inline SVG (vl-convert escapes every text it draws; the SVG carries no script)."""
    import vl_convert

    return Markup(vl_convert.vegalite_to_svg(spec))


def warm_up() -> None:
    """vl-convert starts its JavaScript engine on the first chart (~0.8 s): a server pays that before its first
    page, not during it."""
    svg({"data": {"values": [{"x": 1}]}, "mark": "point", "encoding": {"x": {"field": "x", "type": "quantitative"}}})


def report_page(report: Report, *, live: bool) -> str:
    """The report of one batch; `live` (served, not a file): a running batch's page reloads itself."""
    charts = {name: svg(spec) for name, spec in report.charts.items()}
    return _env().get_template("report.html.j2").render(
        r=report, charts=charts, live=live, refresh_s=REFRESH_S if live and report.progress is not None else None,
        generated=_now())


def list_page(rows: list[dict[str, Any]], newest: int) -> str:
    return _env().get_template("batches.html.j2").render(rows=rows, newest=newest, generated=_now(), utc=dt.UTC)


def unauthorised_page() -> str:
    return _env().get_template("unauthorised.html.j2").render(generated=_now())


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
