"""docs/configuration.md, generated from `cjcore.settings.Settings`: every `CJ_` variable with its type, default
and what the code's comment says of it (so the page cannot drift from the code: a test compares them).

    python -m cli.config_doc > docs/configuration.md
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
from typing import Any

from pydantic_core import PydanticUndefined

from cjcore.settings import Settings

HEADER = """# Configuration

Every setting is an environment variable (`CJ_` and the name in capitals; the API key is `ANTHROPIC_API_KEY`),
read by `cjcore/settings.py` (pydantic-settings). Generated from that file by `python -m cli.config_doc >
docs/configuration.md`; `tests/test_docs.py` fails when the two differ. Units are in the names: `_s` seconds,
`_pct` percent, `per_minute` per minute. Secrets (the key, a database password, the webhook URL) never reach an
actor's arguments, logs or the database: see docs/architecture.md.
"""


def _comments() -> dict[str, tuple[str | None, str]]:
    """Per field of Settings: (the section heading above it, if any; its comments, above and trailing)."""
    source = inspect.getsource(Settings)
    out: dict[str, tuple[str | None, str]] = {}
    above: list[str] = []
    section: str | None = None
    blank_before = True
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            blank_before, above = True, []
            continue
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if blank_before and not above and not text.endswith((".", ":", ")")) and len(text.split()) <= 5:
                section = text  # a heading: one short line after a blank one
            else:
                above.append(text)
            blank_before = False
            continue
        blank_before = False
        match = re.match(r"(\w+): ", stripped)
        if match and match.group(1) in Settings.model_fields:
            trailing = _trailing_comment(line)
            out[match.group(1)] = (section, " ".join([*above, *([trailing] if trailing else [])]))
        above = []
    return out


def _trailing_comment(line: str) -> str | None:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return tok.string.lstrip("#").strip()
    except tokenize.TokenError:  # the first line of a field written over several
        pass
    return None


def _type(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("cjcore.settings.", "")


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "(computed)"
    if field.default is PydanticUndefined or field.default is None:
        return "unset"
    return f"`{field.default!r}`"


def render_configuration() -> str:
    comments = _comments()
    lines = [HEADER]
    section: str | None = None
    for name, field in Settings.model_fields.items():
        heading, text = comments.get(name, (None, ""))
        if heading != section and heading is not None:
            section = heading
            lines += ["", f"## {heading}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        env = "`ANTHROPIC_API_KEY`" if name == "anthropic_api_key" else f"`CJ_{name.upper()}`"
        cell = text.replace("|", "\\|") or "—"
        lines.append(f"| {env} | `{_type(field.annotation)}` | {_default(name)} | {cell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_configuration(), end="")
