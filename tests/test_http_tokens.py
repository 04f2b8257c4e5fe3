"""The API token (web/tokens.py): generated once into the state directory, readable by its owner only;
CJ_API_TOKEN overrides it; the pages' cookie is not the token; and what Ray Serve keeps holds no secret."""

from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr

from cjcore.errors import ConfigError
from cjcore.settings import Settings
from web import serving, tokens


def test_the_first_up_generates_the_token_once_owner_only(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CJ_API_TOKEN", raising=False)
    settings = Settings(state_dir=tmp_path / "state")
    token, generated = tokens.ensure_token(settings)
    assert generated and len(token) >= 40
    assert stat.S_IMODE(tokens.token_file(settings).stat().st_mode) == 0o600
    assert tokens.ensure_token(settings) == (token, False)  # printed once: the second `up` reads it
    assert tokens.read_token(settings) == token


def test_cj_api_token_overrides_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CJ_API_TOKEN", raising=False)
    settings = Settings(state_dir=tmp_path, api_token=SecretStr("given-token"))
    assert tokens.ensure_token(settings) == ("given-token", False)
    assert not tokens.token_file(settings).exists()
    monkeypatch.setenv("CJ_API_TOKEN", "node-token")  # a replica given no token reads its node's environment
    assert tokens.read_token(Settings(state_dir=tmp_path).model_copy(update={"api_token": None})) == "node-token"


def test_no_token_anywhere_is_a_configuration_error_naming_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CJ_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="CJ_API_TOKEN"):
        tokens.read_token(Settings(state_dir=tmp_path))


def test_the_page_cookie_is_not_the_token_and_comparison_is_exact() -> None:
    cookie = tokens.page_cookie("t0ken")
    assert "t0ken" not in cookie and cookie == tokens.page_cookie("t0ken") != tokens.page_cookie("t0ken2")
    assert tokens.same("t0ken", "t0ken") and not tokens.same("t0ke", "t0ken") and not tokens.same(None, "t0ken")


def test_what_serve_keeps_of_the_http_application_holds_no_secret(tmp_path) -> None:
    from ray import cloudpickle

    settings = Settings(state_dir=tmp_path, api_token=SecretStr("api-canary-7d1"),
                        database_url="postgresql://cj:db-canary-93f@db.example/cj",
                        anthropic_api_key=SecretStr("sk-ant-canary-55a"))
    kept = cloudpickle.dumps(serving.application(settings))
    for secret in (b"api-canary-7d1", b"db-canary-93f", b"sk-ant-canary-55a"):
        assert secret not in kept
    assert b"db.example" in kept  # the settings are in it, less their secrets
