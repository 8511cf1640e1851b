"""
C{python -m callapi.emulator}: the emulator alone on a UDP MI socket, with
optional demo calls between the default phones.  Prints the banner and one
C{demo call A -> B: Call-ID ...} line per demo call on stdout, logs to stderr.

Fault injection (all off by default, docs/emulator.md "Fault injection"):
C{--mi-request-loss}/C{--mi-reply-loss}/C{--event-loss} PERCENT,
C{--event-loss-only EVENT}, C{--notify-race PERCENT}, C{--restart-every
SECONDS}, C{--restart-downtime SECONDS}, C{--restart-keep-dialogs},
C{--fault-seed N}; C{SIGUSR1} restarts the emulated OpenSIPS at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from twisted.logger import globalLogBeginner, textFileLogObserver

from callapi.emulator.faults import Faults
from callapi.emulator.sockets import EMULATOR_BANNER, start_emulator


def _parse_mi(spec: str) -> tuple[str, int]:
    """C{udp:HOST:PORT} -> (host, port); C{ValueError} for anything else."""
    if not spec.startswith("udp:"):
        raise ValueError("--mi must look like udp:HOST:PORT")
    host, _, port = spec[4:].rpartition(":")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    """The command line of C{python -m callapi.emulator}."""
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
    faults = parser.add_argument_group("fault injection (all off by default; docs/emulator.md)")
    faults.add_argument(
        "--mi-request-loss",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="MI requests dropped on the way in",
    )
    faults.add_argument(
        "--mi-reply-loss",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="MI replies dropped on the way out",
    )
    faults.add_argument(
        "--event-loss", type=float, default=0.0, metavar="PERCENT", help="event datagrams not sent"
    )
    faults.add_argument(
        "--event-loss-only",
        default=None,
        metavar="EVENT",
        help="lose only this event, e.g. E_DLG_STATE_CHANGED",
    )
    faults.add_argument(
        "--notify-race",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="baresip blind transfers that raise no E_CALL_TRANSFER although the new call connects",
    )
    faults.add_argument(
        "--restart-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="restart the emulated OpenSIPS periodically (0 = never; SIGUSR1 restarts at once)",
    )
    faults.add_argument(
        "--restart-downtime",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long a restart keeps it down (default %(default)s)",
    )
    faults.add_argument(
        "--restart-keep-dialogs",
        action="store_true",
        help="a restart keeps confirmed dialogs (default: forgets all dialogs)",
    )
    faults.add_argument("--fault-seed", type=int, default=None, metavar="N", help="seed of the fault draws")
    return parser


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The L{Faults} of parsed C{build_parser()} options; C{ValueError} for
    a percentage outside 0..100 or a negative time."""
    return Faults(
        mi_request_loss=args.mi_request_loss,
        mi_reply_loss=args.mi_reply_loss,
        event_loss=args.event_loss,
        event_loss_only=args.event_loss_only,
        notify_race=args.notify_race,
        restart_every=args.restart_every,
        restart_downtime=args.restart_downtime,
        restart_forget_dialogs=not args.restart_keep_dialogs,
        seed=args.fault_seed,
    )


def main(argv: list[str] | None = None) -> int:
    """C{python -m callapi.emulator --mi udp:127.0.0.1:8080 ...}"""
    parser = build_parser()
    args = parser.parse_args(argv)
    host, port = _parse_mi(args.mi)
    try:
        faults = faults_from_args(args)
    except ValueError as e:
        parser.error(str(e))

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    running = start_emulator(
        reactor,
        host,
        port,
        args.version,
        args.delay_scale,
        pass_provisional_replies=args.pass_provisional_replies,
        faults=faults,
    )
    emu = running.emulator

    def on_usr1(signum: int, frame: Any) -> None:
        reactor.callFromThread(emu.restart)  # type: ignore[attr-defined,unused-ignore]

    signal.signal(signal.SIGUSR1, on_usr1)
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
