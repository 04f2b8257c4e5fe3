"""The API's bearer token: where it comes from, and how a request's is checked.

CJ_API_TOKEN when set; else the one the first `up` generated into `<state_dir>/api_token` (mode 0600). Read by
the process that checks it (the HTTP replica, from its node's environment or that file), never passed through
Ray. Pages get a cookie derived from the token (never the token itself), so the cookie opens pages and cannot be
replayed as the API's bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cjcore.errors import ConfigError
from cjcore.settings import Settings

TOKEN_FILE = "api_token"
PAGE_COOKIE = "cj_page"


def token_file(settings: Settings) -> Path:
    return settings.state_dir / TOKEN_FILE


def ensure_token(settings: Settings) -> tuple[str, bool]:
    """At `up`: the token in force, and whether it was generated just now (then `up` prints it, once)."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value(), False
    path = token_file(settings)
    if path.exists():
        return read_token(settings), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def read_token(settings: Settings) -> str:
    """Where the token is checked: CJ_API_TOKEN (given, or inherited from the node's environment), else the file."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    if os.environ.get("CJ_API_TOKEN"):
        return os.environ["CJ_API_TOKEN"]
    try:
        token = token_file(settings).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"CJ_API_TOKEN: not set, and {token_file(settings)} cannot be read ({exc.strerror}); "
                          "`launch.py up` generates it") from None
    if not token:
        raise ConfigError(f"CJ_API_TOKEN: not set, and {token_file(settings)} is empty")
    return token


def page_cookie(token: str) -> str:
    """The pages' cookie value: a keyed digest of the token, so the cookie is not the token."""
    return hmac.new(token.encode(), b"cj-pages", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """Compared in constant time (no timing tells how much of a guess was right)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
