"""`python launch.py demo --json` as a new user runs it: its own PostgreSQL, Ray and simulated judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import processes_mentioning

pytestmark = pytest.mark.ray  # its own PostgreSQL, Ray and simulated judge, in a subprocess

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_rankings_and_a_grade_for_every_student(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    env.pop("CJ_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "launch.py", "demo", "--json"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["state"] == "COMPLETED"
    assert len(result["rankings"]) == 24
    students = {r["essay_id"] for r in result["rankings"] if not r["is_anchor"]}
    assert len(students) == 12
    assert {p["essay_id"] for p in result["grade_projections"]} == students
    assert all(p["grade"] in "FEDCBA" and 0 < p["confidence"] <= 1 for p in result["grade_projections"])
    assert (tmp_path / "cj" / "pgdata" / "PG_VERSION").exists()  # the per-user state directory
    # The demo leaves nothing running (`up` is the command that keeps servers): no PostgreSQL on its data
    # directory (PostgreSQL removes postmaster.pid when it stops).
    assert not (tmp_path / "cj" / "pgdata" / "postmaster.pid").exists()
    assert not processes_mentioning(str(tmp_path / "cj" / "pgdata"))
