"""Human-readable output (rich tables); `--json` output bypasses this."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from cjcore.contracts import BatchResult

console = Console()
if not console.is_terminal:  # piped or captured: rich's 80-column default would squeeze ids away
    console.width = 160
err_console = Console(stderr=True)


def result_table(result: BatchResult) -> None:
    grades = {p.essay_id: p for p in result.grade_projections}
    c = result.counters
    console.print(
        f"[bold]batch {result.batch_id}[/bold]: {result.state.value}"
        f" ({result.completion_reason or '-'}), {c.completed} valid + {c.failed} failed of {c.submitted} submitted,"
        f" budget {c.total_budget}, {c.iterations} rounds"
    )
    table = Table(show_lines=False)
    for col in ("rank", "essay", "score", "se", "anchor", "projected grade", "confidence", "infit"):
        table.add_column(col, justify="right" if col in ("rank", "score", "se", "confidence", "infit") else "left")
    for r in result.rankings:
        p = grades.get(r.essay_id)
        table.add_row(
            str(r.rank), r.essay_id, f"{r.score:+.2f}", f"{r.se:.2f}",
            (r.known_grade or "") + (" (ruler)" if r.held else "") if r.is_anchor else "",
            p.grade if p else "", f"{p.confidence:.0%}" if p else "",
            "" if r.infit is None else f"{r.infit:.2f}" + (" misfit" if r.misfit else ""),
        )
    console.print(table)
    pos, rel = result.position, result.reliability
    split = "" if rel.split_half is None else f", split-half {rel.split_half:.3f}"
    ruler = f"; graded against anchor set {result.anchor_set_id}" if result.anchor_set_id else ""
    console.print(
        f"reliability {rel.ssr:.3f}{split}{ruler}; position: A won {pos.a_wins}, B won {pos.b_wins}"
        f" (bias {pos.bias_logit:+.2f} ± {pos.bias_se:.2f} logits); cost {result.cost.input_tokens} in /"
        f" {result.cost.output_tokens} out tokens, ${result.cost.usd:.4f}"
    )
    if rel.target_unreached:
        console.print(f"target reliability {rel.target:g} not reached ({rel.ssr:.3f}): {rel.target_unreached}")
    if result.completion:
        console.print(
            f"completion {result.completion.completion_pct:.1f}% of denominator {result.completion.denominator}"
            f" (threshold {result.completion.threshold_pct:g}%)"
        )


def health_table(rows: list[dict[str, Any]]) -> None:
    table = Table()
    cols = ["batch_id", "state", "host", "queue_position", "total_budget", "submitted_comparisons",
            "completed_comparisons", "failed_comparisons", "in_flight", "anchors", "projections", "events", "age_s"]
    heads = ["batch", "state", "host", "queue", "budget", "submitted", "completed", "failed", "in flight", "anchors",
             "projections", "events", "age s"]
    for h in heads:
        table.add_column(h, no_wrap=h in ("batch", "state"))
    for r in rows:
        table.add_row(*[f"{r[c]:.0f}" if c == "age_s" else "" if r.get(c) is None else str(r[c]) for c in cols])
    console.print(table)
    for r in rows:
        for w in r.get("message_batches") or []:
            polled = f", last polled {w['polled_at']:%H:%M:%S}" if w["polled_at"] else ""
            console.print(f"waiting on Message Batch {w['provider_batch_id'] or '(create unanswered)'}: "
                          f"{w['items']} comparisons, {w['state']} since {w['created_at']:%Y-%m-%d %H:%M:%S}{polled}")


def rows_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for col in (rows[0] if rows else {"-": ""}):
        table.add_column(str(col))
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r.values()])
    console.print(table)


def kv_table(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for k, v in data.items():
        table.add_row(str(k), str(v))
    console.print(table)


def report_table(title: str, report: dict[str, Any]) -> None:
    """A report (loadtest, bench) as a two-column table; nested values shown compactly."""
    table = Table(title=title, show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = "; ".join(map(str, value)) or "-"
        table.add_row(key, str(value))
    console.print(table)


def cpu_table(groups: dict[str, dict[str, float]]) -> None:
    table = Table(title="where the CPU goes")
    for col in ("process group", "CPU s", "ms per comparison", "share"):
        table.add_column(col, justify="left" if col == "process group" else "right")
    for group, v in groups.items():
        table.add_row(group, f"{v['cpu_s']:.2f}", f"{v['ms_per_comparison']:.3f}", f"{v['share']:.1%}")
    console.print(table)
