"""The commands that run the system or measure it: up, down, sim-provider, loadtest, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from cjcore.errors import ConfigError
from cjcore.settings import Settings
from cli.output import emit
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
from driver.stacks import deployment_settings, local_stack, scratch_settings
from simprovider.server import SimConfig, SimProvider


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
    http = _serve_http(settings, args.quiet)
    write_deployment(settings, time.time())
    provider = "Anthropic API" if settings.uses_real_anthropic else f"simulated judge at {settings.provider_base_url}"
    render.console.print(
        f"up: Ray namespace {settings.ray_namespace!r} (dashboard http://127.0.0.1:8265), "
        f"{settings.workers} provider workers → {provider}, {settings.scorers} scorer(s), supervisor; "
        f"database ready; metrics at {metrics_url(settings)}{http}. Next: python launch.py submit FILE --wait"
    )
    if resumed:
        render.console.print(f"up: resumed unfinished batches: {resumed}")
    return 0


def _serve_http(settings: Settings, quiet: bool) -> str:
    """Start the HTTP API and pages (web/serving.py) unless CJ_HTTP_ENABLED=false; the token is printed once,
    when it is generated."""
    if not settings.http_enabled:
        return ""
    from web import serving, tokens

    token, generated = tokens.ensure_token(settings)
    url = serving.start(settings, quiet)
    if generated:
        render.console.print(f"up: the API token, printed this once (kept in {tokens.token_file(settings)}, mode "
                             f"0600; CJ_API_TOKEN overrides it): {token}")
    return f"; HTTP API at {url}/v1 (pages at {url}/batches)"


def _drain(settings: Settings, dep: dict[str, Any], timeout_s: float, quiet: bool) -> dict[str, int] | None:
    """Stop the deployment's actors gracefully (see actors.deployment.shutdown); None if Ray is gone."""
    import ray

    from actors.deployment import shutdown

    running = Settings.model_validate({**dep["settings"], "anthropic_api_key": settings.anthropic_api_key})
    try:
        init_ray(running, local=False)
    except Exception:  # Ray already down: nothing in flight to land
        return None
    try:
        from web import serving

        serving.stop(running, quiet)  # no new submissions over HTTP while the workers drain
        return shutdown(running, timeout_s)
    finally:
        ray.shutdown()


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from storage.database import embedded_pgdata, stop_embedded

    dep = read_deployment(settings)
    if dep is not None:
        summary = _drain(settings, dep, args.drain_timeout, args.quiet)
        if summary:
            left = summary["in_call"] + summary["undelivered"]
            render.console.print(
                f"down: calls in flight landed; {summary}" if not left else
                f"down: the drain timed out after {args.drain_timeout:g}s with {summary['in_call']} calls at the "
                f"provider and {summary['undelivered']} results undelivered (their rows have no result: the next "
                f"`up` sends them again); {summary}")
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
        garbage_rate=args.garbage_rate, batch_create_lost_rate=args.batch_create_lost_rate,
    ))

    async def serve() -> None:
        port = await sim.start(args.host, args.port)
        render.err_console.print(f"simulated Anthropic API on http://{args.host}:{port} (stats at /stats)")
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def cmd_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from benches.loadtest import LoadPlan
    from cjcore.sample import eng5_truth

    if args.provider_timeout is None:  # at 10 means of an exponential latency, 1 answer in 22,000 times out
        args.provider_timeout = max(5.0, 10 * args.latency_ms / 1000)
    f = args.fault_rate  # split over the kinds of fault a provider shows
    sim_config = SimConfig(truth=eng5_truth(), noise=0.5, latency_ms=args.latency_ms, seed=args.seed,
                           error_rate=0.4 * f, overload_rate=0.3 * f, malformed_rate=0.2 * f, timeout_rate=0.1 * f,
                           hang_s=args.provider_timeout + 1, batch_delay_s=args.batch_delay_s,
                           batch_create_lost_rate=args.batch_create_lost_rate)
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
    from benches.loadtest import run_load
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
    if args.what not in ("hosts", "history"):
        args.batches = args.batches or (8 if throughput else 4)
    if throughput:
        args.students = (args.students or [138])[0]
    else:
        args.students = args.students or [24, 48]
    if args.what == "pairing":  # pure simulation: no Ray, no database
        from benches.pairing import format_table, run_pairing_bench

        report = run_pairing_bench(args)
        emit(json.dumps(report, indent=2) if args.json else format_table(report))
        return 0
    if args.what == "fit":  # pure: no Ray, no database
        from benches import fit as fit_bench

        report = fit_bench.run_fit_bench(args)
        emit(json.dumps(report, indent=2) if args.json else fit_bench.format_table(report))
        return 0
    if args.what == "http":  # a running deployment's HTTP layer
        from benches.http import run_http_bench

        report = run_http_bench(args, deployment_settings(settings))
        emit(json.dumps(report, indent=2))
        return 0
    settings = scratch_settings(settings)
    if args.what == "history":  # the database only
        from benches.history import run_history_bench

        report = run_history_bench(args, settings)
        emit(json.dumps(report, indent=2) if args.json else "\n".join(
            ["  ".join(report["table"][0])] + ["  ".join(str(v) for v in row.values()) for row in report["table"]]))
        return 0
    if throughput:
        from benches.throughput import run_throughput_bench

        with contextlib.redirect_stdout(sys.stderr):  # Ray's raylet warnings reach the driver's stdout
            report = run_throughput_bench(args, settings, local_stack)
        if args.json:
            emit(json.dumps(report, indent=2))
        else:
            render.report_table("bench throughput", {k: v for k, v in report.items() if k != "where_the_time_goes"})
            render.cpu_table(report["where_the_time_goes"])
        return 0 if report["all_persisted"] and report["invariants_ok"] else 1
    if args.what == "hosts":
        from benches.hosts import run_hosts_bench

        with contextlib.redirect_stdout(sys.stderr):
            report = run_hosts_bench(args, settings, local_stack)
        emit(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
        return 0 if report["in_progress"] == report["batches"] else 1
    from benches.e2e import run_bench, run_ratelimit_bench

    run = run_ratelimit_bench if args.what == "ratelimit" else run_bench
    report = run(args, settings, local_stack)
    emit(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0
