"""C{callapi-cmd}: run ONE callapi command directly against OpenSIPS, no daemon.

Synopsis::

    callapi-cmd [--mi udp:127.0.0.1:8080] [--events udp:IP:PORT]
                [--mi-timeout SECONDS] [--timeout SECONDS] [--sip-uri URI]
                [--cmd-id ID] [--quiet | --json] [--verbose]
                METHOD [key=value ...] [key:=JSON ...]

It does in-process what C{twistd callapi} + C{callapi-client} do together:
it opens the OpenSIPS side (L{callapi.opensips.service.OpenSIPSService}: the
MI socket, an event socket, C{event_subscribe} for the events the commands
follow), waits until the subscriptions were answered, hands one JSON-RPC
request to a L{callapi.rpc.CommandRunner} session, prints exactly what
C{callapi-client} prints for the response and the notifications, then
aborts whatever still runs, unsubscribes (C{expire: 0}) and closes its
sockets, on every path (C{Ended}, error, C{--timeout}, Ctrl-C/SIGTERM).

Output and exit codes are those of C{callapi-client} (the same
L{callapi.cli.session.CommandSession} decides them; problem lines on stderr
start with C{callapi-cmd:}):

- 0: the command ended (C{Ended}) without an C{Error} notification;
- 1: the command ended after an C{Error} notification (e.g.
  C{404 Dialog not found}, or an MI request of the command timing out);
- 2: usage error (one line on stderr), JSON-RPC error response (e.g. -32602
  invalid params), C{--timeout}, interruption, or OpenSIPS could not be
  reached before the command started: a socket or address problem, or the
  first round of C{which}/C{event_subscribe} failing.  An unreachable MI
  socket therefore exits B{2} after about twice C{--mi-timeout} (the
  C{which} probe, then the subscriptions), with a line naming the timeout::

      callapi-cmd: cannot connect to OpenSIPS MI udp:127.0.0.1:8080: cannot
      subscribe to E_CALL_TRANSFER: OpenSIPS did not answer MI event_subscribe
      within 0.5 s

  This mirrors C{callapi-client}, where a daemon that cannot be reached is a
  connection failure (2) and only a command that started and then failed
  is 1.  Commands that need no event (C{Echo}, C{CallEnd}) are held to the
  same rule: C{callapi-cmd} needs a working OpenSIPS to do anything.

Also runnable as C{python -m callapi.cli.cmd}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

import attrs
from twisted.internet.defer import Deferred

from callapi import __version__
from callapi.cli.args import (
    EXIT_COMMAND_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    ArgumentParser,
    UsageError,
    parse_params,
    positive_seconds,
    printer,
    run_program,
)
from callapi.cli.session import CommandSession
from callapi.opensips.addresses import AddressError, parse_address
from callapi.opensips.service import OpenSIPSService
from callapi.settings import DEFAULTS, Settings

PROG = "callapi-cmd"
DEFAULT_MI = DEFAULTS.mi
#: As callapi-client: longer than any command's own bound with default settings.
DEFAULT_TIMEOUT = 300.0
DEFAULT_MI_TIMEOUT = DEFAULTS.mi_timeout

__all__ = [
    "EXIT_COMMAND_FAILED",
    "EXIT_ERROR",
    "EXIT_OK",
    "CmdOptions",
    "main",
    "parse_args",
    "run",
]


@dataclass(frozen=True)
class CmdOptions:
    """What one C{callapi-cmd} run does.

    @ivar method: the JSON-RPC method (case-sensitive, e.g. C{"CallHold"}).
    @ivar params: the request's C{params} object (includes C{cmd_id} if set).
    @ivar mi: OpenSIPS' mi_datagram socket, C{udp:HOST:PORT} or C{unix:/path}.
    @ivar events: the event socket to bind and advertise in
        C{event_subscribe} (C{udp:IP:PORT}, C{unix:/path}), or C{None} for
        an ephemeral UDP port on the local address that reaches MI.
    @ivar mi_timeout: seconds to wait for each MI reply.
    @ivar timeout: seconds, from the start of the run to C{Ended}.
    @ivar sip_uri: next hop for CallStart's INVITE (the daemon's C{--sip-uri}).
    @ivar quiet: print nothing on stdout (errors still go to stderr).
    @ivar json_output: print each relevant message as raw JSON instead.
    @ivar verbose: write callapi's own log (debug level) to stderr.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    mi: str = DEFAULT_MI
    events: str | None = None
    mi_timeout: float = DEFAULT_MI_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    sip_uri: str | None = None
    quiet: bool = False
    json_output: bool = False
    verbose: bool = False

    def settings(self) -> Settings:
        """
        The daemon settings this run uses: C{mi}, C{events}, C{mi_timeout}
        and C{sip_uri} from the command line, every other value the
        daemon's default (L{callapi.settings.DEFAULTS}).
        """
        return attrs.evolve(
            DEFAULTS,
            mi=self.mi,
            events=self.events,
            mi_timeout=self.mi_timeout,
            commands=attrs.evolve(DEFAULTS.commands, next_hop=self.sip_uri),
        )


def _make_parser() -> ArgumentParser:
    """The command-line parser (C{--help} text included)."""
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Run one callapi command directly against OpenSIPS (no callapi "
            "daemon) and print its Started result and notifications until "
            "Ended, exactly like callapi-client."
        ),
        epilog=(
            "Parameters: key=value sends a string, key:=JSON a JSON value "
            "(e.g. ring_timeout:=30). Exit status: 0 Ended without Error; 1 "
            "Ended after an Error notification; 2 usage or JSON-RPC error, "
            "OpenSIPS unreachable (no answer to which/event_subscribe), "
            "timeout or interruption."
        ),
    )
    parser.add_argument(
        "--mi",
        default=DEFAULT_MI,
        metavar="ADDRESS",
        help=f"OpenSIPS mi_datagram socket, udp:HOST:PORT or unix:/path (default {DEFAULT_MI})",
    )
    parser.add_argument(
        "--events",
        metavar="ADDRESS",
        help="where OpenSIPS sends EVI events, udp:IP:PORT or unix:/path "
        "(default: an ephemeral UDP port on the address that reaches MI)",
    )
    parser.add_argument(
        "--mi-timeout",
        type=positive_seconds,
        default=DEFAULT_MI_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to wait for each MI reply (default {DEFAULT_MI_TIMEOUT:g})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="give up (exit 2) when Ended has not arrived after this many "
        f"seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--sip-uri", metavar="URI", help="next hop (OpenSIPS' SIP URI) for CallStart's INVITE"
    )
    parser.add_argument("--cmd-id", metavar="ID", help="cmd_id to give the command (default: a UUID)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing on stdout; errors still go to stderr"
    )
    output.add_argument(
        "--json", dest="json_output", action="store_true", help="print the raw JSON messages, one per line"
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also write callapi's log (MI requests, events) to stderr",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("method", metavar="METHOD", help="JSON-RPC method, e.g. Echo, CallHold, CallStart")
    parser.add_argument("pairs", metavar="PARAM", nargs="*", help="key=value (string) or key:=JSON (typed)")
    return parser


def parse_args(argv: Sequence[str]) -> CmdOptions:
    """Parse the command line (without the program name).

    Options may come before or after C{METHOD} and the parameters.
    C{--help} and C{--version} print and raise C{SystemExit(0)}.

    @raise UsageError: unknown option, missing METHOD, bad C{--mi} /
        C{--events} address, bad C{--timeout} / C{--mi-timeout}, bad
        C{--sip-uri}, empty C{--cmd-id}, or a bad parameter.
    """
    ns = _make_parser().parse_intermixed_args(list(argv))
    if not ns.method:
        raise UsageError("METHOD must not be empty")
    if ns.cmd_id == "":
        raise UsageError("--cmd-id must not be empty")
    try:
        parse_address(ns.mi, "--mi")
        if ns.events:
            parse_address(ns.events, "--events", allow_port_zero=True)
    except AddressError as e:
        raise UsageError(str(e)) from None
    if ns.sip_uri is not None:
        from callapi.validation import RPCError, sip_uri

        try:
            sip_uri("--sip-uri", ns.sip_uri)
        except RPCError as e:
            raise UsageError(str(e.data)) from None
    return CmdOptions(
        method=ns.method,
        params=parse_params(ns.pairs, ns.cmd_id),
        mi=ns.mi,
        events=ns.events or None,
        mi_timeout=ns.mi_timeout,
        timeout=ns.timeout,
        sip_uri=ns.sip_uri,
        quiet=ns.quiet,
        json_output=ns.json_output,
        verbose=ns.verbose,
    )


def _subscription_problem(service: OpenSIPSService) -> str | None:
    """Why the first round of C{event_subscribe} failed, or C{None}."""
    subscriptions = service.subscriptions
    status = subscriptions.status if subscriptions is not None else {}
    events = subscriptions.events if subscriptions is not None else ()
    for event in events:
        entry = status.get(event)
        if entry is None:
            return f"no answer to the subscription to {event}"
        if not entry.get("ok"):
            return f"cannot subscribe to {event}: {entry.get('error')}"
    return None


async def run(
    reactor: Any,
    options: CmdOptions,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    *,
    on_service: Callable[[OpenSIPSService], None] | None = None,
) -> int:
    """Run one command against OpenSIPS; return the exit code (0, 1 or 2).

    Never raises for network or OpenSIPS problems and never hangs: the
    outcome is known after C{options.timeout} seconds at the latest, then
    cleanup (aborting the command, unsubscribing: at most 2 s more) runs
    before it returns.  The reactor is left running.  While it runs, a
    reactor shutdown (Ctrl-C, SIGTERM under C{react}) ends it with exit 2
    and waits for the same cleanup.

    @param reactor: provides C{IReactorUDP}, C{IReactorTime},
        C{IReactorCore} (and C{IReactorUNIX*} for C{unix:} addresses).
    @param stdout: where results go (default: C{sys.stdout} at call time).
    @param stderr: where problems go (default: C{sys.stderr} at call time).
    @param on_service: called with the started
        L{callapi.opensips.service.OpenSIPSService} (tests use it to learn
        the event socket).
    """
    from callapi.core import build_opensips, build_runner
    from callapi.rpc import Session

    where = f"OpenSIPS MI {options.mi}"
    err = printer(sys.stderr if stderr is None else stderr)
    session = CommandSession(
        where,
        options.method,
        options.params,
        out=printer(sys.stdout if stdout is None else stdout),
        err=err,
        quiet=options.quiet,
        json_output=options.json_output,
        prog=PROG,
    )
    decided: Deferred[int] = Deferred()

    def decide(code: int | None) -> None:
        # Never resume the cleanup below from inside the command's own call
        # stack (e.g. while it emits Ended): one reactor turn later.
        def fire(outcome: int) -> None:
            if not decided.called:
                decided.callback(outcome)

        if code is not None and not decided.called:
            reactor.callLater(0, fire, code)

    try:
        service = build_opensips(options.settings(), reactor)
    except AddressError as e:
        return session.connection_failed(str(e))
    runner = build_runner(options.settings(), service, reactor)
    rpc: list[Session] = []
    cleaned: Deferred[None] = Deferred()

    def subscribed(_: Any) -> None:
        if decided.called or not service.running:
            return
        problem = _subscription_problem(service)
        if problem is not None:
            decide(session.connection_failed(problem))
            return
        try:
            request = session.request()
        except ValueError as e:
            decide(session.connection_failed(f"cannot encode request: {e}"))
            return
        rpc.append(runner.open(lambda text: decide(session.received(text)), peer=PROG))
        rpc[0].received(request)

    def interrupted() -> Deferred[None]:
        if not decided.called:
            err(f"{PROG}: interrupted before Ended; stopping")
            decided.callback(EXIT_ERROR)
        return cleaned

    timer = reactor.callLater(options.timeout, lambda: decide(session.timed_out(options.timeout)))
    trigger = reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        try:
            service.startService()
        except Exception as e:  # AddressError (DNS), CannotListenError ...
            decide(session.connection_failed(str(e)))
        else:
            if on_service is not None:
                on_service(service)
            service.subscribed.addCallback(subscribed)
        code = await decided
    finally:
        if timer.active():
            timer.cancel()
        for opened in rpc:
            runner.closed(opened)  # aborts the command if it still runs
        runner.stop()
        try:
            if service.running:
                await service.stopService()
        finally:
            try:
                reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass  # already run (shutdown in progress)
            cleaned.callback(None)
    return code


def _prepare(options: CmdOptions) -> None:
    """C{--verbose}: callapi's log, debug level and up, on stderr."""
    if not options.verbose:
        return
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from callapi.logging import set_level

    set_level("debug")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (C{callapi-cmd}, C{python -m callapi.cli.cmd}).

    @param argv: arguments without the program name (default C{sys.argv[1:]}).
    @raise SystemExit: always, with the exit code (2 and one stderr line for
        a usage error; 0 for C{--help}).
    """
    run_program(PROG, argv, parse_args, run, prepare=_prepare)


if __name__ == "__main__":
    main()
