"""
C{python -m callapi.emulator}: the emulator alone on a UDP MI socket, with
optional demo calls between the default phones.  Prints the banner and one
C{demo call A -> B: Call-ID ...} line per demo call on stdout, logs to stderr.
"""

from __future__ import annotations

import argparse
import sys

from twisted.logger import globalLogBeginner, textFileLogObserver

from callapi.emulator.sockets import EMULATOR_BANNER, start_emulator


def _parse_mi(spec: str) -> tuple[str, int]:
    """C{udp:HOST:PORT} -> (host, port); C{ValueError} for anything else."""
    if not spec.startswith("udp:"):
        raise ValueError("--mi must look like udp:HOST:PORT")
    host, _, port = spec[4:].rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """C{python -m callapi.emulator --mi udp:127.0.0.1:8080 ...}"""
    parser = argparse.ArgumentParser(
        prog="python -m callapi.emulator",
        description="OpenSIPS EMULATOR for callapi tests and demos (not a real OpenSIPS).",
    )
    parser.add_argument(
        "--mi", default="udp:127.0.0.1:8080", help="MI datagram socket, udp:HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--version",
        default="3.4",
        choices=["3.4", "4.0"],
        help="OpenSIPS version to imitate (default %(default)s)",
    )
    parser.add_argument(
        "--delay-scale",
        type=float,
        default=1.0,
        help="multiply every trace-derived delay (0 = as fast as possible)",
    )
    parser.add_argument(
        "--demo-calls", type=int, default=0, help="set up N confirmed calls between the default phones"
    )
    parser.add_argument(
        "--pass-provisional-replies",
        action="store_true",
        help="imitate tm's pass_provisional_replies=1: t_uac_dlg reports each 18x as an extra reply",
    )
    args = parser.parse_args(argv)
    host, port = _parse_mi(args.mi)

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    running = start_emulator(
        reactor,
        host,
        port,
        args.version,
        args.delay_scale,
        pass_provisional_replies=args.pass_provisional_replies,
    )
    emu = running.emulator
    pairs = [
        ("alice", "bob"),
        ("alice", "dave"),
        ("cindy", "erin"),
        ("bob", "cindy"),
        ("dave", "erin"),
        ("cindy", "alice"),
        ("erin", "bob"),
        ("bob", "dave"),
    ]
    callids = []
    for i in range(max(0, args.demo_calls)):
        a, b = pairs[i % len(pairs)]
        callids.append((a, b, emu.add_call(f"sip:{a}@127.0.0.1", f"sip:{b}@127.0.0.1")))
    print(
        EMULATOR_BANNER.format(version=args.version)
        + f"; MI on udp:{running.mi_address[0]}:{running.mi_address[1]}",
        flush=True,
    )
    for a, b, callid in callids:
        print(f"demo call {a} -> {b}: Call-ID {callid}", flush=True)
    reactor.run()  # type: ignore[attr-defined,misc,unused-ignore]
    return 0
