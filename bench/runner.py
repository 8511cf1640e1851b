"""
One scenario from start to finish: fresh emulator and daemon, the load
processes, the measurement window, /proc readings, and the merged result.

Times are C{time.monotonic()} seconds; the scenario's figures come from
L{bench.report.idle_result} and L{bench.report.load_result}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from bench.processes import (
    Processes,
    Source,
    Workers,
    cpu_seconds,
    log,
    proc_status,
    start_daemon,
    start_emulator,
    udp_drops,
    wait_subscribed,
)
from bench.report import idle_result, load_result
from bench.scenarios import CALL_SCENARIOS


def split(total: int, parts: int) -> list[int]:
    """
    C{total} in C{parts} shares that differ by at most one, larger first.
    """
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_scenario(name: str, args: argparse.Namespace, source: Source, deadline: float) -> dict[str, Any]:
    """
    Run scenario C{name} against the daemon and emulator of C{source}; every
    child process is stopped on return, on error and on interruption.

    @param args: the parsed command line (L{bench.cli.parse_args}).
    @param deadline: C{time.monotonic()} value for the whole run.
    @return: the scenario's figures (L{bench.report.format_table} shows them).
    @raise BenchError: a process did not start or answer in time.
    """
    tmpdir = tempfile.mkdtemp(prefix=f"callapi-bench-{name}-")
    procs = Processes(tmpdir, source)
    try:
        return _run_scenario(name, args, deadline, procs)
    finally:
        procs.kill_all()
        if args.keep_logs:
            log(f"{name}: logs kept in {tmpdir}")
        else:
            for entry in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, entry))
            os.rmdir(tmpdir)


def _run_scenario(name: str, args: argparse.Namespace, deadline: float, procs: Processes) -> dict[str, Any]:
    """
    L{run_scenario} without the clean-up.
    """
    setup_deadline = min(deadline, time.monotonic() + 30)
    nprocs = max(1, args.client_procs)
    if name == "idle":
        nprocs = max(1, min(nprocs, args.idle_clients))
        conns = split(args.idle_clients, nprocs)
        calls = 0
    else:
        nprocs = max(1, min(nprocs, args.clients))
        conns = split(args.clients, nprocs)
        calls = args.clients * args.depth if name in CALL_SCENARIOS else 0
    spares = split(args.blind_spare_calls, nprocs) if name == "blind" else [0] * nprocs
    mi, callids = start_emulator(procs, calls + sum(spares), setup_deadline)
    daemon, port = start_daemon(procs, mi, args, setup_deadline)
    emulator = procs.procs["emulator"]
    time.sleep(0.5)  # calls confirmed
    wait_subscribed(procs, args, min(setup_deadline, time.monotonic() + 10))
    rss_before = proc_status(daemon.pid)
    log(
        f"{name}: emulator pid {emulator.pid} ({mi}, {len(callids)} calls), daemon pid "
        f"{daemon.pid} (ws://127.0.0.1:{port}{args.path}), "
        f"RSS {rss_before.get('VmRSS', 0) / 1024:.1f} MiB; {nprocs} client process(es)"
    )

    configs = []
    commands = split(args.commands, nprocs) if args.commands else [None] * nprocs
    call_offset = 0
    for i in range(nprocs):
        n_calls = (conns[i] * args.depth if name in CALL_SCENARIOS else 0) + spares[i]
        configs.append(
            {
                "scenario": name,
                "mode": "idle" if name == "idle" else "load",
                "port": port,
                "path": args.path,
                "client": args.client,
                "connections": conns[i],
                "depth": args.depth,
                "callids": callids[call_offset : call_offset + n_calls],
                "commands": commands[i],
                "duration": args.duration,
                "warmup": args.warmup,
                "hang_timeout": args.hang_timeout,
                "connect_concurrency": args.connect_concurrency,
                "idle_check": max(0, args.idle_check // nprocs) if name == "idle" else 0,
                "result_path": os.path.join(procs.tmpdir, f"worker{i}.json"),
            }
        )
        call_offset += n_calls
    workers = Workers(procs, configs)
    connect_deadline = min(deadline, time.monotonic() + args.connect_timeout)
    t_connect = time.monotonic()
    workers.expect("ready", connect_deadline)
    connect_seconds = time.monotonic() - t_connect
    watched = {
        "daemon": daemon.pid,
        "emulator": emulator.pid,
        **{f"worker{i}": pid for i, pid in enumerate(workers.pids())},
    }

    if name == "idle":
        time.sleep(1.0)
        rss_after = proc_status(daemon.pid)
        workers.send("check")
        workers.expect("done", min(deadline, time.monotonic() + args.hang_timeout + 10))
        parts = workers.results()
        workers.send("stop")
        before, after = rss_before.get("VmRSS", 0), rss_after.get("VmRSS", 0)
        return idle_result(parts, connect_seconds, before, after, rss_after.get("VmHWM", 0))

    cpu0 = {k: cpu_seconds(pid) for k, pid in watched.items()}
    t0 = time.monotonic()
    workers.send("go")
    cpu_window: tuple[float, float] | None = None
    if not args.commands:
        time.sleep(args.warmup)
        cpu0 = {k: cpu_seconds(pid) for k, pid in watched.items()}
        t0 = time.monotonic()
        time.sleep(args.duration)
        cpu1 = {k: cpu_seconds(pid) for k, pid in watched.items()}
        cpu_window = (t0, time.monotonic())
        rss_run = proc_status(daemon.pid)
    workers.expect(
        "done",
        min(
            deadline,
            time.monotonic() + args.hang_timeout + 10 + (0 if not args.commands else args.max_runtime),
        ),
    )
    if cpu_window is None:
        cpu1 = {k: cpu_seconds(pid) for k, pid in watched.items()}
        cpu_window = (t0, time.monotonic())
        rss_run = proc_status(daemon.pid)
    drops = {"daemon": sum(udp_drops(daemon.pid).values()), "emulator": sum(udp_drops(emulator.pid).values())}
    parts = workers.results()
    workers.send("stop")
    wall = cpu_window[1] - cpu_window[0]
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in watched}
    client_cpu = round(sum(v for k, v in cpu.items() if k.startswith("worker")), 1)
    daemon_log = procs.logs.get("daemon-twist")
    log_lines = 0
    if daemon_log and os.path.exists(daemon_log):
        with open(daemon_log, "rb") as f:
            log_lines = sum(1 for _ in f)
    return load_result(name, args, nprocs, parts, cpu, client_cpu, rss_run, log_lines, drops)
