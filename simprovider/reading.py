"""Reading a Messages request as the simulated judge needs it, written apart from the system's prompt builder
(cjcore/prompt.py) so a bug there is not shared by the oracle: the two essays between the tags the system prompt
announces, HTML-unescaped, and the tool the request asks the answer to use."""

from __future__ import annotations

import html
import re
from typing import Any

_ESSAYS = re.compile(r"<essay_a>\n(?P<a>.*?)\n</essay_a>.*?<essay_b>\n(?P<b>.*)\n</essay_b>", re.DOTALL)
# What Anthropic adds to the input when tool_choice forces a tool (its documentation's table, Claude 4 models).
FORCED_TOOL_OVERHEAD_TOKENS = 346


def essays_in(user_text: str) -> tuple[str, str] | None:
    found = _ESSAYS.search(user_text)
    if found is None:
        return None
    return html.unescape(found["a"]), html.unescape(found["b"])


def tool_name(body: dict[str, Any]) -> str:
    """The tool the answer must call: tool_choice's, else the first tool's."""
    choice = body.get("tool_choice") or {}
    if isinstance(choice, dict) and choice.get("name"):
        return str(choice["name"])
    tools = body.get("tools") or []
    return str(tools[0]["name"]) if tools and isinstance(tools[0], dict) and tools[0].get("name") else "verdict"
