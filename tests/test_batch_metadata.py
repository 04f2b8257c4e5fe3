"""The batch's metadata (cjcore/batch_metadata.py): one declared model, written as patches of what a writer set,
read from a row of any version."""

from __future__ import annotations

from cjcore.batch_metadata import VERSION, BatchMetadata, CompletionMeta, Stopping
from cjcore.contracts import BudgetSource, JudgeFitOut, ReliabilityOut


def test_a_patch_holds_only_what_its_writer_set_with_the_version() -> None:
    meta = BatchMetadata(cancel_requested=True)
    assert meta.patch() == {"cancel_requested": True, "version": VERSION}
    scored = BatchMetadata(reliability=ReliabilityOut(ssr=0.8, target=0.9), held=["a1"])
    scored.reliability.split_half = 0.75  # type: ignore[union-attr]  # set later, at finalize: still sent
    scored.judges = [JudgeFitOut(model="m", comparisons=10, infit=1.1)]
    patch = scored.patch()
    assert patch["reliability"] == {"ssr": 0.8, "target": 0.9, "split_half": 0.75}
    assert set(patch) == {"reliability", "held", "judges", "version"}


def test_a_row_written_before_the_model_reads_with_its_keys() -> None:
    old = {"budget_source": "service_default", "n_essays": 24, "submission_id": "s1",
           "reliability": {"ssr": 0.83, "comparisons_per_essay": 12.0, "target": 0.9},
           "completion": {"denominator": 150, "threshold_pct": 95.0, "completion_pct": 96.0, "valid_at_fit": 144},
           "judges": [{"model": "claude-haiku-4-5", "comparisons": 144, "infit": 0.8, "outfit": 0.7}],
           "stopping": {"state": "FAILED", "reason": "provider_outage", "error": "x"},
           "a_key_from_elsewhere": 1}
    meta = BatchMetadata.read(old)
    assert meta.version == 1 and meta.target_reliability is None  # resolved at activation, as before
    assert meta.budget_source is BudgetSource.SERVICE_DEFAULT and meta.n_essays == 24
    assert meta.completion == CompletionMeta(denominator=150, threshold_pct=95.0, completion_pct=96.0,
                                             valid_at_fit=144)
    assert meta.stopping == Stopping(state="FAILED", reason="provider_outage", error="x")
    assert meta.judges[0].model == "claude-haiku-4-5"
    assert BatchMetadata.read(None) == BatchMetadata(version=1)
