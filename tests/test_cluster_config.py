"""cluster.yaml is a valid Ray cluster launcher config for the local provider (head + two workers), with
the cloud example kept as comments."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_cluster_yaml_describes_a_local_head_and_two_workers_running_the_project():
    text = CONFIG.read_text()
    cfg = yaml.safe_load(text)
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and len(cfg["provider"]["worker_ips"]) == 2
    assert cfg["min_workers"] == cfg["max_workers"] == 2
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    # Token authentication: every node in token mode, with the launching machine's token copied to it
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert cfg["file_mounts"].get("/home/ubuntu/.ray/auth_token") == "~/.ray/auth_token"
    assert any("pip install" in c for c in cfg["setup_commands"])  # every node imports the same code
    assert "python launch.py up --address auto" in text
    assert "# provider:\n#   type: aws" in text  # the commented cloud example
