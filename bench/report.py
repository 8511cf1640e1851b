"""
The bench's figures: merging the load processes' measurements into one
result per scenario, the machine description, and the table printed at the
end (C{--json} prints the same dictionaries).

Latencies are milliseconds, RSS MiB (KiB per connection), CPU percent of
one core over the measured window.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float | None:
    """
    Nearest-rank percentile of an already sorted list; C{None} when empty.
    """
    if not sorted_values:
        return None
    rank = max(1, int(-(-p * len(sorted_values) // 100)))  # ceil
    return sorted_values[min(rank, len(sorted_values)) - 1]


def idle_result(
    parts: list[dict[str, Any]], connect_seconds: float, before_kib: int, after_kib: int, peak_kib: int
) -> dict[str, Any]:
    """
    The idle scenario's figures.

    @param parts: every worker's measurements (L{bench.load.Load.result}
        plus C{connected}, C{idle_checked}).
    @param connect_seconds: time to open every connection.
    @param before_kib: daemon VmRSS before the connections, KiB.
    @param after_kib: daemon VmRSS 1 s after they are all open, KiB.
    @param peak_kib: daemon VmHWM then, KiB.
    """
    before, after = before_kib, after_kib
    connected = sum(p["connected"] for p in parts)
    checked = sum(p["idle_checked"] for p in parts)
    return {
        "scenario": "idle",
        "connections": connected,
        "connect_seconds": round(connect_seconds, 2),
        "connections_per_s": round(connected / connect_seconds, 1) if connect_seconds else None,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "rss_peak_mib": round(peak_kib / 1024, 1),
        "kib_per_connection": round((after - before) / connected, 2) if connected else None,
        "liveness_echo": f"{sum(p['completed_total'] for p in parts)}/{checked}",
        "errors": sum(p["rpc_errors"] + p["error_events"] for p in parts),
        "hung": sum(p["hung"] for p in parts),
        "daemon_rss_mib": round(after / 1024, 1),
    }


def load_result(
    name: str,
    args: argparse.Namespace,
    nprocs: int,
    parts: list[dict[str, Any]],
    cpu: dict[str, float],
    client_cpu: float,
    rss_run: dict[str, int],
    log_lines: int,
    drops: dict[str, int],
) -> dict[str, Any]:
    """
    A load scenario's figures.

    @param parts: every worker's measurements (L{bench.load.Load.result}).
    @param cpu: CPU percent over the window, by C{daemon}, C{emulator}, C{workerN}.
    @param client_cpu: the workers' sum.
    @param rss_run: the daemon's VmRSS/VmHWM in KiB at the end of the window.
    @param log_lines: lines in the daemon's log file.
    @param drops: UDP datagrams the kernel dropped, by C{daemon} and C{emulator}.
    """
    started = sorted(x for p in parts for x in p["to_started_ms"])
    success = sorted(x for p in parts for x in p["to_success_ms"])
    ended = sorted(x for p in parts for x in p["to_ended_ms"])
    cleanup = sorted(x for p in parts for x in p["cleanup_ended_ms"])
    if args.commands:
        completed = sum(p["counted_total"] for p in parts)
        elapsed = max(p["elapsed"] for p in parts)
    else:
        completed = sum(p["completed_window"] for p in parts)
        elapsed = args.duration
    return {
        "scenario": name,
        "clients": args.clients,
        "depth": args.depth,
        "client": args.client,
        "client_procs": nprocs,
        "commands": completed,
        "seconds": round(elapsed, 2),
        "commands_per_s": round(completed / elapsed, 1) if elapsed else None,
        "counted_on": {"callstart": "CalleeAnswered", "blind": "TransferSuccessful"}.get(name, "Ended"),
        "started_p50_ms": _r(percentile(started, 50)),
        "started_p99_ms": _r(percentile(started, 99)),
        "success_p50_ms": _r(percentile(success, 50)),
        "success_p99_ms": _r(percentile(success, 99)),
        "ended_p50_ms": _r(percentile(ended, 50)),
        "ended_p99_ms": _r(percentile(ended, 99)),
        "ended_max_ms": _r(ended[-1] if ended else None),
        "errors": sum(p["rpc_errors"] + p["error_events"] for p in parts),
        "rpc_errors": sum(p["rpc_errors"] for p in parts),
        "error_events": sum(p["error_events"] for p in parts),
        "bad_sequence": sum(p["bad_sequence"] for p in parts),
        "unexpected_messages": sum(p["unexpected"] for p in parts),
        "hung": sum(p["hung"] for p in parts),
        "late": sum(p["late"] for p in parts),
        "commands_total": sum(p["completed_total"] for p in parts),
        "error_kinds": _merge_counts(p["error_kinds"] for p in parts),
        "cleanup": {
            "commands": sum(p["cleanup_completed"] for p in parts),
            "errors": sum(p["cleanup_errors"] for p in parts),
            "hung": sum(p["cleanup_hung"] for p in parts),
            "ended_p50_ms": _r(percentile(cleanup, 50)),
            "ended_p99_ms": _r(percentile(cleanup, 99)),
        },
        "per_second": [
            sum(column)
            for column in zip(
                *(
                    p["per_second"]
                    + [0] * (len(max((q["per_second"] for q in parts), key=len)) - len(p["per_second"]))
                    for p in parts
                ),
                strict=False,
            )
        ],
        "blind_spares_used": sum(p["spares_used"] for p in parts),
        "blind_slots_stopped": sum(p["slots_stopped"] for p in parts),
        "daemon_rss_mib": round(rss_run.get("VmRSS", 0) / 1024, 1),
        "cpu_percent": {"daemon": cpu["daemon"], "emulator": cpu["emulator"], "clients": client_cpu},
        "daemon_log_lines": log_lines,
        "udp_drops": drops,
    }


def _merge_counts(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def machine_info(root: str) -> dict[str, Any]:
    """
    Where the figures come from: date, CPU, versions, load average, and the
    commit of C{root} (the source tree measured), with its uncommitted
    changes.
    """
    commit = ""
    try:
        # read-only: --no-optional-locks keeps git status from rewriting the index
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        changed = [
            line[3:]
            for line in subprocess.run(
                ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.splitlines()
            if line
        ]
        if changed:
            commit += (
                " (+ uncommitted changes: "
                + ", ".join(changed[:4])
                + (", ..." if len(changed) > 4 else "")
                + ")"
            )
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import autobahn

    import twisted

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "autobahn": autobahn.__version__,
        "kernel": platform.release(),
        "commit": commit,
        "loadavg_at_start": os.getloadavg()[0],
    }


def format_table(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str]) -> str:
    """
    The human-readable report: a header line, the load scenarios' table with
    their notes, and the idle scenario's table.

    @param results: L{load_result} / L{idle_result} of the scenarios that ran.
    @param info: L{machine_info}.
    @param argv: the command line, for the header.
    """
    lines = [
        f"callapi bench  {info['date']}  nproc={info['nproc']}  python {info['python']}  "
        f"twisted {info['twisted']}  autobahn {info['autobahn']}  commit {info['commit']}  "
        f"loadavg {info['loadavg_at_start']:.2f}",
        "command: " + " ".join(argv),
        "",
    ]
    load = [r for r in results if r["scenario"] != "idle"]
    if load:
        header = (
            f"{'scenario':<9} {'clients':>7} {'depth':>5} {'cmds':>7} {'cmd/s':>7} "
            f"{'Started p50':>11} {'p99':>6} {'Success p50':>11} {'p99':>7} "
            f"{'Ended p50':>9} {'p99':>7} {'errors':>6} "
            f"{'hung':>4} {'RSS MiB':>7}  CPU% daemon/emu/clients"
        )
        lines += [header, "-" * len(header)]
        for r in load:
            cpu = r["cpu_percent"]
            lines.append(
                f"{r['scenario']:<9} {r['clients']:>7} {r['depth']:>5} {r['commands']:>7} "
                f"{r['commands_per_s']:>7.0f} {_ms(r['started_p50_ms']):>11} {_ms(r['started_p99_ms']):>6} "
                f"{_ms(r.get('success_p50_ms')):>11} {_ms(r.get('success_p99_ms')):>7} "
                f"{_ms(r['ended_p50_ms']):>9} {_ms(r['ended_p99_ms']):>7} {r['errors']:>6} {r['hung']:>4} "
                f"{r['daemon_rss_mib']:>7.1f}  "
                f"{cpu['daemon']:.0f}/{cpu['emulator']:.0f}/{cpu['clients']:.0f}"
            )
        lines.append(
            "latencies in ms, measured by the clients from sending the request; "
            f"client = {load[0]['client']} x {load[0]['client_procs']} process(es)"
        )
        if any(r["scenario"] in ("callstart", "blind") for r in load):
            lines.append(
                "Success = CalleeAnswered (callstart) / TransferSuccessful (blind); these two "
                "count a command (cmds, cmd/s) when its Success event arrives"
            )
        for r in load:
            extra = []
            c = r.get("cleanup") or {}
            if c.get("commands") or c.get("errors") or c.get("hung"):
                extra.append(
                    f"CallEnd of each new call (not measured above): {c['commands']} ended, "
                    f"p50/p99 {_ms(c['ended_p50_ms'])}/{_ms(c['ended_p99_ms'])} ms, "
                    f"{c['errors']} errors, {c['hung']} hung"
                )
            if r.get("blind_spares_used") or r.get("blind_slots_stopped"):
                extra.append(
                    f"transfers that left no new call: a spare call was used "
                    f"{r['blind_spares_used']} times; slots stopped without a call "
                    f"{r['blind_slots_stopped']}"
                )
            if any(r["udp_drops"].values()):
                extra.append(
                    f"UDP datagrams dropped by the kernel (receive buffer full): "
                    f"daemon {r['udp_drops']['daemon']}, emulator {r['udp_drops']['emulator']}"
                )
            if r["bad_sequence"] or r["unexpected_messages"] or r["late"]:
                extra.append(
                    f"Ended without Error but with an incomplete event sequence "
                    f"{r['bad_sequence']}; unexpected messages {r['unexpected_messages']}; "
                    f"Ended after being counted as hung {r['late']}"
                )
            if (r.get("ended_max_ms") or 0) > 1000:
                extra.append(f"slowest command {r['ended_max_ms']:.0f} ms to Ended")
            for text, n in list(r["error_kinds"].items())[:3]:
                extra.append(f"{n} x error: {text}")
            for e in extra:
                lines.append(f"  {r['scenario']}: {e}")
    for r in results:
        if r["scenario"] == "idle":
            lines += [
                "",
                f"{'scenario':<8} {'conns':>6} {'connect s':>9} {'RSS before':>10} {'RSS after':>9} "
                f"{'KiB/conn':>8} {'echo check':>10} {'errors':>6} {'hung':>4}",
                f"{'idle':<8} {r['connections']:>6} {r['connect_seconds']:>9.1f} "
                f"{r['rss_before_mib']:>10.1f} {r['rss_after_mib']:>9.1f} "
                f"{r['kib_per_connection']:>8.1f} {r['liveness_echo']:>10} "
                f"{r['errors']:>6} {r['hung']:>4}",
                "RSS in MiB (VmRSS of the daemon process)",
            ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
