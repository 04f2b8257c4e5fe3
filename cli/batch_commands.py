"""The commands about batches and rulers: demo, submit, status, cancel, inspect, anchors, export."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from cjcore.contracts import BatchRequest, BatchResult, BatchState, parse_batch_request
from cjcore.errors import CJError, ConfigError, InvalidRequest
from cjcore.settings import Settings
from cli.output import emit, print_result, progress_printer
from driver import render
from driver.runtime import (
    init_ray,
)
from driver.stacks import deployment_settings, local_stack
from simprovider.server import SimConfig


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from cjcore.sample import eng5_request, eng5_truth
    from driver.api import CJClient

    sim = SimConfig(truth=eng5_truth(), noise=args.noise, position_bias=args.position_bias,
                    latency_ms=args.latency_ms, seed=args.seed)
    if not args.json:
        render.err_console.print("starting PostgreSQL, Ray and the simulated judge…")
    with local_stack(settings, sim) as (settings, _):
        async def run() -> BatchResult:
            progress, update = progress_printer(args.json)
            async with CJClient(settings) as client:
                with progress:
                    batch_id = await client.submit(eng5_request())
                    return await client.wait(batch_id, timeout_s=args.timeout, progress=update)

        result = asyncio.run(run())
    print_result(result, args.json)
    return 0 if result.state is BatchState.COMPLETED else 1


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"FILE: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"FILE: {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None


def _read_request(path: str, several: bool, settings: Settings) -> BatchRequest:
    data = _read_json(path)
    try:
        return parse_batch_request(data, settings.max_essays_per_batch, settings.max_essay_chars)
    except InvalidRequest as exc:
        if several:  # say which file
            raise InvalidRequest(exc.field, f"{str(exc).split(': ', 1)[-1]} (in {path})") from None
        raise


def _warn_unreachable_target(batch_id: str, request: BatchRequest, settings: Settings) -> None:
    """A target reliability above what the batch's essays and budget typically give is said at submit: the
    batch will most likely stop on its budget or its pairs, and its result will say so."""
    from cjcore.completion import typical_ceiling

    target = request.target_reliability or settings.target_reliability
    budget = request.max_comparisons or settings.default_max_comparisons
    ceiling = typical_ceiling(len(request.essays), budget)
    if target > ceiling:
        render.err_console.print(
            f"warning: batch {batch_id}: target reliability {target:g} is above what {len(request.essays)} essays "
            f"and {budget} comparisons typically give (~{ceiling:.2f}); it will likely stop on its budget or pairs")


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from driver.api import CJClient

    # Every file is read and validated before any connection or storage: one bad request stores none.
    requests = [_read_request(f, len(args.file) > 1, settings) for f in args.file]
    settings = deployment_settings(settings)
    init_ray(settings, local=False)
    several = len(requests) > 1

    async def run() -> int:
        async with CJClient(settings) as client:
            batch_ids = await client.submit_many(requests)
            for batch_id, request in zip(batch_ids, requests, strict=True):
                _warn_unreachable_target(batch_id, request, settings)
            if not args.wait:
                accepted = [{"batch_id": b, "state": BatchState.QUEUED.value} for b in batch_ids]
                if args.json:
                    emit(json.dumps(accepted if several else accepted[0]))
                else:
                    print("\n".join(batch_ids))
                return 0
            if several:
                results = await asyncio.gather(*(client.wait(b, timeout_s=args.timeout) for b in batch_ids))
            else:
                progress, update = progress_printer(args.json)
                with progress:
                    results = [await client.wait(batch_ids[0], timeout_s=args.timeout, progress=update)]
            if args.json and several:
                emit(json.dumps([r.model_dump(mode="json") for r in results]))
            else:
                for result in results:
                    print_result(result, args.json)
            return 0 if all(r.state is BatchState.COMPLETED for r in results) else 1

    return asyncio.run(run())


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from driver.api import CJClient

    settings = deployment_settings(settings)
    if args.id is None and not args.json:  # the list ends with admission's bound, when a deployment answers
        with contextlib.suppress(CJError):
            init_ray(settings, local=False)

    async def run() -> int:
        async with CJClient(settings) as client:
            if args.id and args.watch:
                progress, update = progress_printer(False)
                with progress:
                    result = await client.wait(args.id, progress=update, poll_s=0.5)
                print_result(result, args.json)
                return 0
            rows = await client.health(args.id)
            if args.json:
                emit(json.dumps(rows if args.id is None else rows[0], default=str, indent=2))
            else:
                render.health_table(rows)
                if args.id is None and (bound := await client.admission_bound()):
                    print(bound)
            return 0

    return asyncio.run(run())


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from driver.api import CJClient

    settings = deployment_settings(settings)
    init_ray(settings, local=False)

    async def run() -> int:
        async with CJClient(settings) as client:
            _, message = await client.cancel_explained(args.id)
            print(message)
            return 0

    return asyncio.run(run())


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from driver.api import CJClient

    settings = deployment_settings(settings)
    with contextlib.suppress(Exception):  # counters from the database work without Ray
        init_ray(settings, local=False)

    async def run() -> int:
        async with CJClient(settings) as client:
            report = await client.inspect(args.id)
        if args.json:
            emit(json.dumps(report, default=str, indent=2))
        else:
            render.kv_table(f"batch {args.id}: counters", report["counters"])
            render.kv_table("rows in cj_comparison_pairs (COUNT)", report["database"])
            render.kv_table("errors by code", report["errors_by_code"] or {"-": 0})
            render.kv_table("cost", report["cost"])
            render.console.print(f"consistent: {report['consistent']}; outbox events: {report['outbox_events']};"
                                 f" coordinator: {report['coordinator']}")
        return 0 if report["consistent"] else 1

    return asyncio.run(run())


def cmd_anchors(args: argparse.Namespace, settings: Settings) -> int:
    from cjcore.rulers import check_anchor_bounds, parse_anchor_set
    from driver.api import CJClient

    data = None
    if args.action == "register":  # validated before any connection: a bad file stores nothing
        data = _read_json(args.file)
        check_anchor_bounds(parse_anchor_set(data), settings.max_essay_chars)
    settings = deployment_settings(settings)
    if args.action == "register":
        init_ray(settings, local=False)

    async def run() -> Any:
        async with CJClient(settings) as client:
            if args.action == "register":
                progress, update = progress_printer(args.json)
                with progress:
                    return await client.register_anchor_set(data, timeout_s=args.timeout, progress=update)
            if args.action == "list":
                return await client.rulers.list()
            shown = await client.rulers.show(args.id)
            if shown is None:
                raise InvalidRequest("ID", f"no anchor set {args.id!r} is registered")
            return shown

    out = asyncio.run(run())
    if args.json:
        emit(json.dumps(out, indent=2))
    elif args.action == "list":
        render.rows_table("anchor sets", out)
    else:
        render.kv_table(f"anchor set {out['anchor_set_id']}", {k: v for k, v in out.items() if k != "anchors"})
        render.rows_table("anchors (calibrated, logits)", out["anchors"])
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from driver import export
    from driver.api import CJClient

    settings = deployment_settings(settings)

    async def run() -> dict[str, Any]:
        async with CJClient(settings) as client:
            return await client.export(args.id)

    doc = asyncio.run(run())
    emit(export.as_csv(doc) if args.format == "csv" else export.as_json(doc), end="" if args.format == "csv" else "\n")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from cjcore.report import Report
    from driver.api import CJClient
    from web import page

    settings = deployment_settings(settings)

    async def run() -> Report:
        async with CJClient(settings) as client:
            return await client.report(args.id)

    report = asyncio.run(run())
    out = Path(args.out)
    try:
        out.write_text(page.report_page(report, live=False), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out}: {exc.strerror}") from None
    render.err_console.print(f"report of batch {args.id} ({report.state}, {len(report.essays)} essays) → {out}")
    return 0
