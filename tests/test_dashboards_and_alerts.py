"""Dashboards and alert rules name only metrics the code exports; the rules pass promtool's check and
unit tests (pure: no stack needed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cjcore.metrics_catalog import exported_series_names

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
METRIC = re.compile(r"\b((?:cj|llm)_[a-z_]+)\b")


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CJ_REQUIRE_PROMETHEUS"):
            pytest.fail("promtool is not installed (.ci/run installs Debian's prometheus package)")
        pytest.skip("promtool not installed (apt-get install prometheus); .ci/run installs it")
    return binary


@pytest.mark.parametrize("name", ["cj-overview.json", "cj-provider.json", "cj-quality.json"])
def test_every_dashboard_query_names_an_exported_metric(name):
    dashboard = json.loads((DASHBOARDS / name).read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    exported = exported_series_names()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = METRIC.findall(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert set(names) <= exported, (panel["title"], set(names) - exported)


def test_alert_rules_name_exported_metrics_and_each_has_a_summary():
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {"CJBatchStuck", "CJCompletedWithoutProjections", "CJProviderErrorShareHigh",
                                          "CJProviderRateLimited", "CJOutboxBacklog", "CJSupervisorNotRunning"}
    for rule in rules:
        assert rule["annotations"]["summary"]
        assert set(METRIC.findall(rule["expr"])) <= exported_series_names(), rule["alert"]
    readme = (DASHBOARDS.parent / "docs" / "operations.md").read_text()
    assert all(f"`{r['alert']}`" in readme for r in rules)  # each has its runbook line


def test_promtool_checks_and_unit_tests_the_rules():
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=DASHBOARDS, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=DASHBOARDS, capture_output=True,
                          text=True)
    assert test.returncode == 0, test.stdout + test.stderr
