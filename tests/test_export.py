"""`export --format csv`: a cell a spreadsheet would run as a formula is neutralised; numbers stay numbers."""

from __future__ import annotations

import csv
import io

from driver.export import as_csv


def test_cells_a_spreadsheet_would_run_as_formulas_are_neutralised_and_numbers_stay_numbers():
    doc = {
        "result": {"batch_id": "b1", "grade_projections": [],
                   "rankings": [{"essay_id": "=HYPERLINK(\"http://x\")", "rank": 1, "score": -0.5, "se": 0.2}]},
        "attempts": [{"correlation_id": "c1", "essay_a_id": "@SUM(A1)", "essay_b_id": "+1", "winner": "essay_a",
                      "justification": "-2+3 is \tfine", "confidence": 4.0},
                     {"correlation_id": "c2", "essay_a_id": "\tx", "essay_b_id": "y", "winner": "error",
                      "justification": "plain text"}],
    }
    rows = list(csv.DictReader(io.StringIO(as_csv(doc), newline="")))
    ranking, first, second = rows
    assert ranking["essay_id"] == "'=HYPERLINK(\"http://x\")"
    assert ranking["score"] == "-0.5" and ranking["rank"] == "1"  # numbers, not text with an apostrophe
    assert (first["essay_a_id"], first["essay_b_id"], first["justification"]) == ("'@SUM(A1)", "'+1", "'-2+3 is \tfine")
    assert (second["essay_a_id"], second["essay_b_id"]) == ("'\tx", "y")
    assert second["justification"] == "plain text"
    carriage = {**doc, "attempts": [{"correlation_id": "c3", "essay_a_id": "\r=1"}]}
    assert ",'\r=1," in as_csv(carriage)
