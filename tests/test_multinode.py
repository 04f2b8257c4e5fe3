"""The same code on a multi-node Ray cluster: a head and two worker nodes on this machine, batches
spread across them, one worker node removed mid-run (tests/cluster_scenario.py, in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(480)
def test_batches_complete_across_three_nodes_when_a_worker_node_is_removed(pg_url):
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "tests.cluster_scenario", pg_url], cwd=root,
                          capture_output=True, text=True, timeout=450)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nmulti-node: {report}")
    assert report["nodes"] == 3
    assert report["nodes_with_actors"] >= 2  # spread: no node affinity
    assert report["on_removed_node"], "the removed node ran none of the deployment's actors"
    assert report["results_before_removal"] > 0
    assert report["states"] == {"COMPLETED": 4}
    assert report["invariant_violations"] == {}
    assert report["events_per_batch"] == [1] * 4
    assert set(report["removed_node_pool_actors_now"].values()) <= {"elsewhere"}
