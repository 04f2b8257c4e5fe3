"""The API key and essay text never reach Ray's session logs, results or the database's error columns; the
actors' logs are JSON lines carrying the actor's name and the batch and correlation ids."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import ray

from actors import names
from cjcore.sample import eng5_request
from tests.conftest import TEST_API_KEY, TEST_DB_PASSWORD
from tests.helpers import run_batch, sql


def test_no_key_or_essay_text_in_logs_results_or_rows(stack, sim):
    sim.configure(error_rate=0.3, malformed_rate=0.2)  # failures are what get logged
    request = eng5_request()
    request["essays"] = request["essays"][:8]
    request["max_comparisons"] = 20
    result = run_batch(stack, request)
    essay_snippets = [e["text"][:60] for e in request["essays"]]

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    text = "\n".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file() and p.suffix in
                     {".log", ".out", ".err", ""})
    assert "provider error" in text  # failures were logged, so the check below looked at real lines
    assert TEST_API_KEY not in text
    assert not [s for s in essay_snippets if s in text]

    dumped = result.model_dump_json()
    assert TEST_API_KEY not in dumped
    rows = sql(stack, "SELECT coalesce(error_details, '') || coalesce(justification, '') FROM cj_comparison_pairs "
                      "WHERE batch_id = :b", b=result.batch_id)
    assert not any(TEST_API_KEY in r[0] or any(s in r[0] for s in essay_snippets) for r in rows)

    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    mine = [r for r in records if r.get("batch_id") == result.batch_id]
    assert any(r.get("actor_name", "").startswith(names.HOST_PREFIX) and "round" in r["message"] for r in mine)
    failures = [r for r in mine if "provider error" in r["message"]]
    assert failures and all(r.get("correlation_id") and r.get("actor_name", "").startswith("cj-provider-")
                            for r in failures)


def test_no_actor_is_given_the_api_key_and_workers_read_it_from_their_key_file(deployment, sim, tmp_path,
                                                                                 monkeypatch):
    """Ray keeps every actor's constructor arguments (in its GCS, in Redis with fault tolerance on): the
    key must not be among them. Every actor creation this driver makes is recorded and its arguments
    pickled; the provider workers get the key from the file named in the settings, on their own."""
    import hashlib
    import secrets

    from pydantic import SecretStr
    from ray import cloudpickle  # Ray's own (no separate package is installed)

    canary, file_key = "sk-ant-canary-" + secrets.token_hex(8), "sk-ant-file-" + secrets.token_hex(8)
    key_file = tmp_path / "key"
    key_file.write_text(file_key + "\n")
    created: list[bytes] = []
    original = ray.actor.ActorClass._remote

    def recording(self, args=None, kwargs=None, **options):
        created.append(cloudpickle.dumps((args, kwargs)))
        return original(self, args=args, kwargs=kwargs, **options)

    monkeypatch.setattr(ray.actor.ActorClass, "_remote", recording)
    settings = deployment(services=False, anthropic_api_key=SecretStr(canary), anthropic_api_key_file=key_file)
    result = run_batch(settings, {"essays": eng5_request()["essays"][:4], "max_comparisons": 6})
    assert result.state.value == "COMPLETED"
    assert len(created) >= 6  # limiter, 2 workers, scorer, a coordinator host, admission
    assert not [blob for blob in created if canary.encode() in blob]
    assert TEST_DB_PASSWORD in (settings.database_url or "")  # the stack's URL has a password…
    assert not [blob for blob in created if TEST_DB_PASSWORD.encode() in blob]  # …that no actor is given
    assert hashlib.sha256(file_key.encode()).hexdigest()[:16] in sim.key_fingerprints
    assert hashlib.sha256(canary.encode()).hexdigest()[:16] not in sim.key_fingerprints


def test_the_deployment_file_holds_no_password_and_is_readable_by_its_owner_only(tmp_path, monkeypatch, capsys):
    """`up` writes <state dir>/deployment.json for later commands: the database password stays out of it (a
    command then asks for CJ_DATABASE_URL by name), and the file is 0600."""
    import stat

    from cjcore.settings import load_settings
    from cli.main import main
    from driver.runtime import write_deployment

    for var in ("CJ_DATABASE_URL", "CJ_RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    secret = "pw-" + secrets.token_hex(6)
    settings = load_settings(state_dir=tmp_path, database_url=f"postgresql://cj:{secret}@db.example:5432/cj")
    path = write_deployment(settings, 0.0)
    assert secret not in path.read_text() and "cj:***@db.example" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setenv("CJ_STATE_DIR", str(tmp_path))
    assert main(["status"]) == 2
    assert capsys.readouterr().err.startswith("error: CJ_DATABASE_URL: the deployment's database URL has a password")


def test_redaction_covers_a_password_in_the_query_and_the_webhook_url_is_not_published():
    from cjcore.settings import Settings, redacted

    assert redacted("postgresql://u@h/db?password=s3cret&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    assert redacted("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgresql://u@h/db?host=/run/pg") == "postgresql://u@h/db?host=/run/pg"  # nothing to hide
    settings = Settings(database_url="postgresql://u@h/db?password=s3cret",
                        event_webhook_url="https://hooks.example/T0/B0/secret-token")
    published = str(settings.public())
    assert "s3cret" not in published and "secret-token" not in published
    given = settings.for_actors()  # what actors get: neither secret (the outbox reads the URL where it runs)
    assert "s3cret" not in str(given.model_dump()) and "secret-token" not in str(given.model_dump())
    assert settings.webhook_url_value() == "https://hooks.example/T0/B0/secret-token"  # the driver's own
