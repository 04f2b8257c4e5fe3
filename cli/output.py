"""What a command prints: its one document (stdout, nothing else there under `--json`), progress on stderr,
a result as JSON or a table."""

from __future__ import annotations

import sys
from typing import Any

from cjcore.contracts import BatchResult, BatchState, Counters
from driver import render


class Document:
    """Where a command's one document goes. With `--json` (and for `export`) everything else printed on
    stdout during the command, Ray's forwarded worker and raylet lines included, is sent to stderr."""

    out: Any = None


def emit(text: str, end: str = "\n") -> None:
    stream = Document.out or sys.stdout
    stream.write(text + end)
    stream.flush()


def progress_printer(json_out: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                        TimeElapsedColumn(), console=render.err_console, transient=True, disable=json_out)
    task = progress.add_task("batch", total=1, detail="")

    def update(state: BatchState, c: Counters) -> None:
        progress.update(task, total=max(1, c.total_budget), completed=c.completed + c.failed,
                        description=state.value.lower(),
                        detail=f"{c.completed} valid, {c.failed} failed, {c.in_flight} in flight, round {c.iterations}")

    return progress, update


def print_result(result: BatchResult, as_json: bool) -> None:
    if as_json:
        emit(result.model_dump_json(indent=2))
    else:
        render.result_table(result)
