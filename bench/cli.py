"""
The bench's command line: C{bench/bench.py} (or C{python -m bench}) parses
its options, runs the scenarios one after the other under a C{SIGALRM}
deadline (C{--max-runtime}) and prints the table or JSON
(L{bench.report}).  C{--worker CONFIG} makes the process a load process
(L{bench.worker}) instead.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from bench.processes import REPO, BenchError, Source, log, raise_nofile_limit
from bench.report import format_table, machine_info
from bench.runner import run_scenario
from bench.scenarios import SCENARIOS


def parse_args(argv: list[str]) -> argparse.Namespace:
    """
    The options of bench/README.md; exits with status 2 on a usage error.
    """
    p = argparse.ArgumentParser(
        prog="bench/bench.py",
        description="Benchmark the callapi daemon against the OpenSIPS emulator (127.0.0.1 only).",
    )
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument("--clients", type=int, default=100, help="concurrent WebSocket clients (echo, hold)")
    p.add_argument(
        "--depth",
        type=int,
        default=1,
        help="commands in flight per client (pipeline depth); hold uses one call per slot",
    )
    run = p.add_mutually_exclusive_group()
    run.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured seconds per load scenario, after --warmup [default 15]",
    )
    run.add_argument(
        "--commands",
        type=int,
        default=None,
        help="run this many commands per load scenario instead of a duration",
    )
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument(
        "--blind-spare-calls",
        type=int,
        default=100,
        help="blind: emulator calls beyond one per slot, for slots whose transfer "
        "failed (a failed transfer leaves no new call to go on with)",
    )
    p.add_argument("--idle-clients", type=int, default=10000)
    p.add_argument(
        "--idle-check",
        type=int,
        default=100,
        help="Echo on this many of the idle connections afterwards (liveness)",
    )
    p.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    p.add_argument(
        "--client",
        choices=("raw", "autobahn"),
        default="raw",
        help="client WebSocket implementation: a minimal RFC 6455 client (default, cheap) or Autobahn's",
    )
    p.add_argument(
        "--hang-timeout",
        type=float,
        default=10.0,
        help="a command without Ended after this many seconds counts as hung",
    )
    p.add_argument("--connect-timeout", type=float, default=90.0)
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=200,
        help="WebSocket handshakes in flight per client process",
    )
    p.add_argument(
        "--daemon-log-level",
        default="info",
        choices=("debug", "info", "warn", "error", "critical"),
        help="twist --log-level of the daemon [default info, as deployed]",
    )
    p.add_argument(
        "--daemon-wrapper",
        metavar="SCRIPT",
        help="run the daemon as 'python SCRIPT <twist arguments>' instead of "
        "'python -m twisted ...' (to try a monkeypatched fix without editing "
        "the daemon; SCRIPT must end by running twist, see bench/README.md)",
    )
    p.add_argument(
        "--source",
        metavar="DIR",
        default=REPO,
        help="run the daemon and the emulator from this callapi source tree "
        "(PYTHONPATH=DIR), e.g. a 'git worktree' of an older commit, to compare "
        "[default: this repository]",
    )
    # obsolete since the emulator purges ended dialogs in O(1) itself (99bb0a1);
    # accepted so that old command lines still run
    p.add_argument("--emulator-fast-purge", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", default="/call-api")
    p.add_argument(
        "--max-runtime",
        type=float,
        default=None,
        help="hard limit for the whole run, seconds [default: from the scenarios]",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep-logs", action="store_true", help="keep the process logs (path on stderr)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        if args.duration is None and args.commands is None:
            args.duration = 15.0
        for name in ("clients", "depth", "idle_clients", "client_procs"):
            if getattr(args, name) <= 0:
                p.error(f"--{name.replace('_', '-')} must be positive")
        if args.blind_spare_calls < 0:
            p.error("--blind-spare-calls must not be negative")
        if args.duration is not None and args.duration <= 0:
            p.error("--duration must be positive")
        if args.commands is not None and args.commands <= 0:
            p.error("--commands must be positive")
    return args


class _Deadline(Exception):
    """
    C{--max-runtime} passed (raised from the SIGALRM handler).
    """


def main(argv: list[str] | None = None) -> int:
    """
    Run the bench; C{argv} defaults to C{sys.argv[1:]}.

    @return: the exit status: 0, 1 when a scenario failed or C{--max-runtime}
        passed, 130 when interrupted (SIGINT, SIGTERM).
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker is not None:
        from bench.worker import (
            worker_main,  # installs the reactor: load processes only
        )

        with open(args.worker) as f:
            worker_main(json.load(f))
        return 0
    try:
        source = Source(args.source)
    except BenchError as e:
        log(str(e))
        return 2
    if args.emulator_fast_purge:
        log("--emulator-fast-purge is obsolete and ignored: the emulator purges ended dialogs in O(1)")
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.max_runtime is None:
        per_load = 30 + args.warmup + (args.duration or 60) + args.hang_timeout
        args.max_runtime = sum(per_load if s != "idle" else 30 + args.connect_timeout for s in scenarios)
    limit = raise_nofile_limit()
    if "idle" in scenarios and limit < args.idle_clients // max(1, args.client_procs) + 100:
        log(f"warning: RLIMIT_NOFILE is {limit}; {args.idle_clients} idle clients may not fit")

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Deadline()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # even when started with SIGINT ignored (&)
    signal.alarm(int(args.max_runtime) + 1)
    deadline = time.monotonic() + args.max_runtime
    info = machine_info(source.root)
    results: list[dict[str, Any]] = []
    status = 0
    try:
        for name in scenarios:
            log(f"{name}: starting")
            try:
                result = run_scenario(name, args, source, deadline)
            except BenchError as e:
                log(f"{name}: FAILED: {e}")
                result = {"scenario": name, "failed": str(e)}
                status = 1
            results.append(result)
            if "failed" not in result:
                log(f"{name}: done")
    except _Deadline:
        log(f"stopped: --max-runtime {args.max_runtime:.0f} s exceeded")
        status = 1
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        signal.alarm(0)
    ok = [r for r in results if "failed" not in r]
    if args.json:
        print(
            json.dumps(
                {"machine": info, "command": " ".join(["bench/bench.py", *argv]), "results": results},
                indent=2,
            )
        )
    else:
        print(format_table(ok, info, ["bench/bench.py", *argv]))
        for r in results:
            if "failed" in r:
                print(f"{r['scenario']}: FAILED: {r['failed']}")
    return status
