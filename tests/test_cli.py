"""The command line as a user runs it: bad input refused with a message naming the field, exit codes,
`submit --wait --json`, `status`, `inspect`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cli.main import main
from tests.helpers import essays, sql


@pytest.fixture
def cli_env(stack, monkeypatch):
    """The session deployment's settings, as environment variables a user would export."""
    env = {
        "CJ_DATABASE_URL": stack.database_url, "CJ_PROVIDER_BASE_URL": stack.provider_base_url,
        "CJ_WORKERS": str(stack.workers), "CJ_SCORERS": str(stack.scorers), "CJ_STATE_DIR": str(stack.state_dir),
        "CJ_SUPERVISOR_INTERVAL_S": "3600", "CJ_MAX_PROCESSING_SECONDS": "3600",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return stack


BAD_FILES = [
    ({"essays": []}, "essays"),
    ({"essays": [{"essay_id": "x", "text": "only one"}]}, "essays"),
    ({"essays": [{"essay_id": "x", "text": "a"}, {"essay_id": "x", "text": "b"}]}, "essays"),
    ({"essays": [{"essay_id": "x", "text": ""}, {"essay_id": "y", "text": "b"}]}, "essays[0].text"),
    ({"essays": essays(2), "max_comparisons": -1}, "max_comparisons"),
    ({"essays": [{"essay_id": "x", "text": "a", "is_anchor": True}, {"essay_id": "y", "text": "b"}]},
     "essays[0].known_grade"),
    ({"essays": [{"essay_id": "x", "text": "a", "is_anchor": True, "known_grade": "A*"},
                 {"essay_id": "y", "text": "b"}]}, "essays[0].known_grade"),
    # Bounds (DESIGN §4.1): sizes from CJ_MAX_ESSAYS_PER_BATCH / CJ_MAX_ESSAY_CHARS, control characters
    ({"essays": essays(2_001)}, "essays"),
    ({"essays": [{"essay_id": "x", "text": "w" * 60_001}, {"essay_id": "y", "text": "b"}]}, "essays[0].text"),
    ({"essays": essays(2), "instructions": "i" * 20_001}, "instructions"),
    ({"essays": [{"essay_id": "x", "text": "a"}, {"essay_id": "y", "text": "nul \u0000 inside"}]}, "essays[1].text"),
    ({"essays": [{"essay_id": "x\u001b[2J", "text": "a"}, {"essay_id": "y", "text": "b"}]}, "essays[0].essay_id"),
    ({"essays": essays(2), "instructions": "bell \u0007"}, "instructions"),
    ({"essays": essays(2), "assignment_id": "a\u0000b"}, "assignment_id"),
]


@pytest.mark.parametrize(("data", "field"), BAD_FILES, ids=[f for _, f in BAD_FILES])
def test_bad_input_exits_2_naming_the_field_and_stores_nothing(cli_env, tmp_path, capsys, data, field):
    before = sql(cli_env, "SELECT count(*) FROM cj_batches")[0][0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert main(["submit", str(path), "--wait"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {field}: ") and len(err[0]) < 300  # no essay text echoed
    assert sql(cli_env, "SELECT count(*) FROM cj_batches")[0][0] == before


def test_the_bounds_are_the_deployments_settings(cli_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CJ_MAX_ESSAYS_PER_BATCH", "3")
    monkeypatch.setenv("CJ_MAX_ESSAY_CHARS", "40")
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"essays": essays(4, "bnd")}))
    assert main(["submit", str(path)]) == 2
    assert "error: essays: at most 3 essays per batch (CJ_MAX_ESSAYS_PER_BATCH), got 4" in capsys.readouterr().err
    path.write_text(json.dumps({"essays": [{"essay_id": "a", "text": "x" * 41}, {"essay_id": "b", "text": "y"}]}))
    assert main(["submit", str(path)]) == 2
    assert "error: essays[0].text: at most 40 characters (CJ_MAX_ESSAY_CHARS), got 41" in capsys.readouterr().err


def test_not_json_and_missing_file_are_refused(cli_env, tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    assert main(["submit", str(bad)]) == 2
    assert main(["submit", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err and "cannot read" in err


def test_a_duplicate_batch_id_is_refused_and_the_first_batch_is_untouched(cli_env, tmp_path, capsys):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"batch_id": "dup-cli-1", "essays": essays(3, "d"), "max_comparisons": 3}))
    assert main(["submit", str(path), "--wait", "--json"]) == 0
    capsys.readouterr()
    assert main(["submit", str(path)]) == 2
    assert "batch_id: batch 'dup-cli-1' already exists" in capsys.readouterr().err
    assert sql(cli_env, "SELECT count(*) FROM cj_comparison_pairs WHERE batch_id = 'dup-cli-1'")[0][0] == 3


def test_submit_wait_json_prints_the_result_and_status_and_inspect_agree(cli_env, tmp_path, capsys):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"essays": essays(5, "cli", anchors={"cli00": "C", "cli01": "A"}),
                                "max_comparisons": 10}))
    assert main(["submit", str(path), "--wait", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["state"] == "COMPLETED"
    assert {p["essay_id"] for p in result["grade_projections"]} == {"cli02", "cli03", "cli04"}
    assert main(["status", result["batch_id"], "--json"]) == 0
    health = json.loads(capsys.readouterr().out)
    assert (health["state"], health["anchors"], health["projections"], health["events"]) == ("COMPLETED", 2, 3, 1)
    assert main(["inspect", result["batch_id"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["consistent"] is True
    assert report["counters"]["submitted"] == report["database"]["submitted"] == result["counters"]["submitted"]
    assert main(["status"]) == 0
    assert result["batch_id"][:8] in capsys.readouterr().out


def test_submit_wait_exits_non_zero_when_the_batch_fails_and_still_prints_it(cli_env, sim, tmp_path, capsys):
    sim.configure(malformed_rate=1.0)  # the judge never gives a verdict
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"essays": essays(8, "clifail"), "max_comparisons": 28}))
    assert main(["submit", str(path), "--wait", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["state"] == "FAILED"


def test_a_bad_setting_is_refused_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("CJ_WORKERS", "0")
    assert main(["status"]) == 2
    assert capsys.readouterr().err.startswith("error: CJ_WORKERS:")


def test_bench_pairing_prints_each_section_it_is_asked_for(capsys):
    assert main(["bench", "pairing", "--students", "6", "--seeds", "1", "--json",
                 "--sections", "strategies", "stop", "misfit"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {(r["students"], r["strategy"]) for r in report["strategies"]} == {(6, "random"), (6, "adaptive")}
    assert {r["noise"] for r in report["stop"]} == {0.2, 0.5, 1.0}
    assert {r["rule"] for r in report["stop"]} == {"before: change < 0.1", "after: reliability ≥ 0.85",
                                                   "after: reliability ≥ 0.9"}
    assert [r["per_essay"] for r in report["misfit"]] == [10, 20]
    assert "calibration" not in report


def test_submit_of_several_files_stores_all_queued_or_none(cli_env, tmp_path, capsys):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps({"batch_id": f"multi-{i}", "essays": essays(3, f"m{i}"), "max_comparisons": 3}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"batch_id": "multi-bad", "essays": []}))
    assert main(["submit", *map(str, paths), str(bad), "--json"]) == 2
    assert "(in " in capsys.readouterr().err  # which file
    assert sql(cli_env, "SELECT count(*) FROM cj_batches WHERE batch_id LIKE 'multi-%'")[0][0] == 0
    assert main(["submit", *map(str, paths), "--json"]) == 0
    accepted = json.loads(capsys.readouterr().out)
    assert accepted == [{"batch_id": f"multi-{i}", "state": "QUEUED"} for i in range(3)]
    assert main(["submit", *map(str, paths), "--wait", "--json"]) == 2  # ids taken: refused, nothing stored
    capsys.readouterr()
    for i in range(3):
        assert main(["status", f"multi-{i}", "--watch", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "COMPLETED"


def test_the_example_batch_in_the_readme_is_accepted(cli_env, capsys):
    """The README session's `submit examples/eng5-batch.json`: valid and stored (the same request runs end to
    end as the demo, in test_demo); cancelled here so it costs the suite nothing."""
    from cjcore.sample import eng5_request

    example = Path(__file__).resolve().parent.parent / "examples" / "eng5-batch.json"
    assert json.loads(example.read_text()) == eng5_request()  # what the demo runs
    assert main(["submit", str(example), "--json"]) == 0
    accepted = json.loads(capsys.readouterr().out)
    assert accepted["state"] == "QUEUED"
    essays_stored = sql(cli_env, "SELECT count(*) FROM cj_essays WHERE batch_id = :b", b=accepted["batch_id"])
    assert essays_stored[0][0] == 24
    assert main(["cancel", accepted["batch_id"]]) == 0


def test_anchors_register_list_show_then_a_batch_on_the_ruler_and_its_export(cli_env, tmp_path, capsys):
    """The README's ruler session, on the example files: register, list, show, submit, export."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    anchor_set = json.loads((examples / "eng5-anchor-set.json").read_text())
    anchor_set.update(anchor_set_id="cli-ruler", max_comparisons=66)  # every anchor pair once: a quick calibration
    path = tmp_path / "anchors.json"
    path.write_text(json.dumps(anchor_set))
    assert main(["anchors", "register", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["anchor_set_id"] == "cli-ruler" and len(shown["anchors"]) == 12
    assert shown["boundaries"] == sorted(shown["boundaries"])
    assert main(["anchors", "list", "--json"]) == 0
    assert "cli-ruler" in {s["anchor_set_id"] for s in json.loads(capsys.readouterr().out)}
    assert main(["anchors", "show", "cli-ruler", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == shown

    batch = json.loads((examples / "eng5-ruler-batch.json").read_text())
    batch.update(anchor_set_id="cli-ruler", essays=batch["essays"][:4], max_comparisons=30)
    path.write_text(json.dumps(batch))
    assert main(["submit", str(path), "--wait", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["anchor_set_id"] == "cli-ruler" and len(result["grade_projections"]) == 4
    assert main(["export", result["batch_id"], "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sum(r["record"] == "attempt" for r in rows) == result["counters"]["submitted"]
    assert sum(r["record"] == "projection" for r in rows) == 4


@pytest.mark.parametrize(("data", "field"), [
    ({"anchor_set_id": "x", "anchors": []}, "anchors"),
    ({"anchor_set_id": "bad id!", "anchors": []}, "anchor_set_id"),
    ({"anchor_set_id": "x", "anchors": [{"anchor_ref_id": "a", "text": "t", "known_grade": "Z"}]},
     "anchors[0].known_grade"),
])
def test_a_bad_anchor_set_file_is_refused_naming_the_field_before_any_connection(tmp_path, capsys, data, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert main(["anchors", "register", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {field}:")


def test_export_of_an_unknown_batch_exits_2(cli_env, capsys):
    assert main(["export", "no-such-batch"]) == 2
    assert "not found" in capsys.readouterr().err


def test_json_output_is_one_document_while_ray_prints_raylet_warnings(cli_env, tmp_path, capsys):
    """Ray prints its raylet warnings (`(raylet) WARNING: N PYTHON worker processes…`) on the driver's stdout
    from a background thread; with --json they must go to stderr. Provoked here through Ray's own channel
    for them, published to every driver while the command runs."""
    import threading

    import ray
    from ray._private.utils import publish_error_to_driver

    from cli.output import Document

    gcs = ray._private.worker.global_worker.gcs_client
    stop = threading.Event()

    def warn() -> None:
        while Document.out is None and not stop.is_set():  # the command has not started yet
            stop.wait(0.01)
        n = 0
        while not stop.is_set():
            n += 1
            publish_error_to_driver("cj_test", f"WARNING: {n} PYTHON worker processes have been started "
                                    "(provoked by the test)", gcs)
            stop.wait(0.05)

    path = tmp_path / "j.json"
    path.write_text(json.dumps({"essays": essays(6, "json"), "max_comparisons": 15}))
    thread = threading.Thread(target=warn, daemon=True)
    thread.start()
    try:
        assert main(["submit", str(path), "--wait", "--json"]) == 0
    finally:
        stop.set()
        thread.join()
    captured = capsys.readouterr()
    assert json.loads(captured.out)["state"] == "COMPLETED"  # the whole of stdout is one JSON document
    assert "provoked by the test" in captured.err  # the warnings came, and went to stderr


def test_up_uses_the_ray_of_the_running_interpreter_not_the_first_on_path(tmp_path, monkeypatch):
    from cjcore.errors import ConfigError
    from driver import runtime

    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "ray").write_text("#!/bin/sh\n")
    (venv / "ray").chmod(0o755)
    other = tmp_path / "other"
    other.mkdir()
    (other / "ray").write_text("#!/bin/sh\n")
    (other / "ray").chmod(0o755)
    monkeypatch.setenv("PATH", str(other))
    monkeypatch.setattr(runtime.sys, "executable", str(venv / "python"))
    assert runtime.ray_cli() == str(venv / "ray")
    (venv / "ray").unlink()
    assert runtime.ray_cli() == str(other / "ray")  # a Python without its own: the one on PATH
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="no `ray` command"):
        runtime.ray_cli()
