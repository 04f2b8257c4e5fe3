"""The comparison prompt and its verdict, shared by the provider worker and the simulated server.

Instructions go in a system block marked for prompt caching (the part every call of a batch repeats);
the two essays go in the user turn between fixed tags; the verdict comes back through a forced tool
call, so it is structured JSON rather than prose to be parsed.

An essay is fenced: `&`, `<` and `>` in its text are escaped as XML entities, so an essay that quotes the
tags (`</essay_a>…`) cannot end its own block or open another; `extract_essays` undoes it exactly.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from dataclasses import dataclass
from typing import Any

from cjcore.contracts import ComparisonRequest, Winner, clean_text

TOOL_NAME = "record_verdict"
JUSTIFICATION_CHARS = 300
ESSAY_A_OPEN, ESSAY_A_CLOSE = "<essay_a>\n", "\n</essay_a>"
ESSAY_B_OPEN, ESSAY_B_CLOSE = "<essay_b>\n", "\n</essay_b>"

VERDICT_TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": "Record which essay is better, how sure you are, and a one-sentence reason.",
    "input_schema": {
        "type": "object",
        "properties": {
            "winner": {"type": "string", "enum": ["A", "B"]},
            "confidence": {"type": "number", "minimum": 1, "maximum": 5},
            "justification": {"type": "string", "maxLength": JUSTIFICATION_CHARS},
        },
        "required": ["winner", "confidence", "justification"],
    },
}


class MalformedVerdict(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Verdict:
    winner: Winner
    confidence: float
    justification: str


def _fence(text: str) -> str:
    return html.escape(text, quote=False)


def user_turn(text_a: str, text_b: str) -> str:
    return (
        "Compare these two essays.\n\n"
        f"{ESSAY_A_OPEN}{_fence(text_a)}{ESSAY_A_CLOSE}\n\n{ESSAY_B_OPEN}{_fence(text_b)}{ESSAY_B_CLOSE}\n\n"
        f"Call {TOOL_NAME} with your verdict."
    )


def message_params(req: ComparisonRequest) -> dict[str, Any]:
    """Keyword arguments for `client.messages.create`."""
    user = user_turn(req.text_a, req.text_b)
    prompt_sha = hashlib.sha256((req.instructions + "\x00" + user).encode()).hexdigest()
    return {
        "model": req.model,
        "max_tokens": req.max_tokens,
        # No "temperature": the Messages API of anthropic SDK 2.x no longer takes it; the request's
        # llm.temperature is kept in the contract and the stored request, not sent.
        "system": [{"type": "text", "text": req.instructions, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": user}],
        "tools": [VERDICT_TOOL],
        "tool_choice": {"type": "tool", "name": TOOL_NAME},
        # user_id is the only metadata field the API accepts; it carries ids, never personal data.
        "metadata": {"user_id": f"cj:{req.correlation_id}:{prompt_sha[:32]}"},
    }


def extract_essays(user_text: str) -> tuple[str, str] | None:
    """The two essay texts from a user turn built by `user_turn` (the simulated judge reads them)."""
    try:
        a0 = user_text.index(ESSAY_A_OPEN) + len(ESSAY_A_OPEN)
        a1 = user_text.index(ESSAY_A_CLOSE, a0)
        b0 = user_text.index(ESSAY_B_OPEN, a1) + len(ESSAY_B_OPEN)
        b1 = user_text.rindex(ESSAY_B_CLOSE)
    except ValueError:
        return None
    return html.unescape(user_text[a0:a1]), html.unescape(user_text[b0:b1])


def parse_verdict(content: list[Any]) -> Verdict:
    """The verdict from a response's content blocks (SDK objects or dicts)."""
    for block in content:
        kind = getattr(block, "type", None) or (block.get("type") if isinstance(block, dict) else None)
        if kind != "tool_use":
            continue
        data = getattr(block, "input", None) if not isinstance(block, dict) else block.get("input")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise MalformedVerdict("tool input is not JSON") from exc
        if not isinstance(data, dict):
            raise MalformedVerdict("tool input is not an object")
        side = str(data.get("winner", "")).strip().upper()
        if side not in ("A", "B"):
            raise MalformedVerdict(f"winner must be A or B, got {side[:10]!r}")
        try:
            confidence = float(data.get("confidence", 3))
        except (TypeError, ValueError):
            raise MalformedVerdict("confidence is not a number") from None
        if not math.isfinite(confidence):  # NaN or infinity: not a confidence, and not storable as one
            raise MalformedVerdict("confidence is not a finite number")
        justification = clean_text(str(data.get("justification", "")), JUSTIFICATION_CHARS)
        return Verdict(Winner.ESSAY_A if side == "A" else Winner.ESSAY_B, confidence, justification)
    raise MalformedVerdict("no tool_use block in the response")
