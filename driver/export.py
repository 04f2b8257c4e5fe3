"""`launch.py export ID --format csv|json`: the decision record of a batch, what a moderator reads.

JSON: {"result": the batch result (DESIGN §4.2), "attempts": every comparison attempt (pair, winner,
confidence, justification, error, tokens, cost)}. CSV: one table, one row per record, its kind in
`record` (ranking, projection, attempt) and the union of their columns.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from cjcore.contracts import BatchResult

ATTEMPT_COLUMNS = [
    "correlation_id", "iteration", "attempt", "retry_of", "essay_a_id", "essay_b_id", "winner", "winning_essay_id",
    "confidence", "justification", "error_code", "error_details", "http_status", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "cost_usd", "latency_ms", "provider_request_id", "created_at",
    "completed_at",
]
RANKING_COLUMNS = ["essay_id", "rank", "score", "se", "is_anchor", "known_grade", "infit", "outfit", "misfit", "held"]
PROJECTION_COLUMNS = ["essay_id", "grade", "confidence", "probabilities"]


def document(result: BatchResult, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    for a in attempts:
        a["winning_essay_id"] = {"essay_a": a["essay_a_id"], "essay_b": a["essay_b_id"]}.get(a["winner"] or "")
    return {"result": result.model_dump(mode="json"), "attempts": attempts}


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (it starts with =, +, -, @, tab or CR) gets a leading
    apostrophe (OWASP's advice for CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def as_csv(doc: dict[str, Any]) -> str:
    columns = ["record", "batch_id"] + list(dict.fromkeys(RANKING_COLUMNS + PROJECTION_COLUMNS + ATTEMPT_COLUMNS))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    batch_id = doc["result"]["batch_id"]
    def row(**cells: Any) -> None:
        writer.writerow({k: _cell(v) for k, v in cells.items()})

    for r in doc["result"]["rankings"]:
        row(record="ranking", batch_id=batch_id, **r)
    for p in doc["result"]["grade_projections"]:
        row(record="projection", batch_id=batch_id, **{**p, "probabilities": json.dumps(p["probabilities"],
                                                                                        sort_keys=True)})
    for a in doc["attempts"]:
        row(record="attempt", batch_id=batch_id, **a)
    return out.getvalue()
