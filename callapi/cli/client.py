"""C{callapi-client}: send one command to a callapi server and follow it to its end.

Synopsis::

    callapi-client [--url URL] [--timeout SECONDS] [--cmd-id ID] [--quiet | --json]
                   METHOD [key=value ...] [key:=JSON ...]

The client opens one WebSocket connection, sends one JSON-RPC 2.0 request
C{{"jsonrpc": "2.0", "id": 1, "method": METHOD, "params": {...}}}, prints the
C{Started} result and then every notification of that command, one line each,
until the command's C{Ended} notification.

Exit codes (see L{EXIT_OK}, L{EXIT_COMMAND_FAILED}, L{EXIT_ERROR}):

- 0: the command ended (C{Ended}) without an C{Error} notification;
- 1: the command ended after an C{Error} notification;
- 2: anything else: usage error, connection failure (refused, bad URL, DNS,
  handshake), JSON-RPC error response, unparsable or unexpected server frame,
  the server closing the connection before C{Ended}, or the timeout.

L{CommandSession} (L{callapi.cli.session}) is pure (no Autobahn, no
reactor) and decides what each server message means and which exit code
results; L{run} here is the thin Twisted/Autobahn shell that feeds it.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO, cast

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.python.failure import Failure

from callapi import __version__
from callapi.cli.args import (
    EXIT_COMMAND_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    ArgumentParser,
    UsageError,
    parse_pair,
    parse_params,
    positive_seconds,
    printer,
    run_program,
)
from callapi.cli.session import CommandSession

__all__ = [
    "EXIT_COMMAND_FAILED",
    "EXIT_ERROR",
    "EXIT_OK",
    "PROG",
    "ClientOptions",
    "CommandSession",
    "UsageError",
    "main",
    "parse_args",
    "parse_pair",
    "parse_params",
    "run",
]

PROG = "callapi-client"
DEFAULT_URL = "ws://127.0.0.1:5059/call-api"
#: Longer than the daemon's own bounds (ring 60 s + transfer start 15 s + outcome 130 s).
DEFAULT_TIMEOUT = 300.0

# After the outcome is known, how long (seconds) we let the WebSocket closing
# handshake run before aborting the TCP connection.  Autobahn's own close
# timeouts (1 s + 1 s) normally end it first; this is the backstop.
_LINGER_SECONDS = 3.0


@dataclass(frozen=True)
class ClientOptions:
    """What one C{callapi-client} run does.

    @ivar method: the JSON-RPC method (case-sensitive, e.g. C{"CallStart"}).
    @ivar params: the request's C{params} object (includes C{cmd_id} if set).
    @ivar url: WebSocket URL, C{ws://}/C{wss://} (C{ws://unix:/path} for a
        unix socket).
    @ivar timeout: seconds, from the start of the run to C{Ended}.
    @ivar quiet: print nothing on stdout (errors still go to stderr).
    @ivar json_output: print each relevant server message as raw JSON instead.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    url: str = DEFAULT_URL
    timeout: float = DEFAULT_TIMEOUT
    quiet: bool = False
    json_output: bool = False


def _make_parser() -> ArgumentParser:
    """The command-line parser (C{--help} text included)."""
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Send one JSON-RPC command to a callapi server over WebSocket and "
            "print its Started result and notifications until Ended."
        ),
        epilog=(
            "Parameters: key=value sends a string, key:=JSON a JSON value "
            "(e.g. count:=3, flag:=true, data:='{\"a\":1}'). "
            "Exit status: 0 Ended without Error; 1 Ended after an Error "
            "notification; 2 usage, connection or JSON-RPC error, unparsable "
            "server frame, connection closed before Ended, or timeout."
        ),
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=(
            "give up (exit 2) when Ended has not arrived after this many seconds "
            f"(default {DEFAULT_TIMEOUT:g})"
        ),
    )
    parser.add_argument(
        "--cmd-id", metavar="ID", help="cmd_id to give the command (default: the server picks one)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing on stdout; errors still go to stderr"
    )
    output.add_argument(
        "--json", dest="json_output", action="store_true", help="print the raw JSON messages, one per line"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("method", metavar="METHOD", help="JSON-RPC method, e.g. Echo, CallStart, CallEnd")
    parser.add_argument("pairs", metavar="PARAM", nargs="*", help="key=value (string) or key:=JSON (typed)")
    return parser


def parse_args(argv: Sequence[str]) -> ClientOptions:
    """Parse the command line (without the program name).

    Options may come before or after C{METHOD} and the parameters.  C{--help}
    and C{--version} print and raise C{SystemExit(0)}.

    @raise UsageError: unknown option, missing METHOD, bad C{--timeout},
        empty C{--cmd-id}, or a bad parameter (see L{parse_params}).
    """
    ns = _make_parser().parse_intermixed_args(list(argv))
    if not ns.method:
        raise UsageError("METHOD must not be empty")
    if ns.cmd_id == "":
        raise UsageError("--cmd-id must not be empty")
    return ClientOptions(
        method=ns.method,
        params=parse_params(ns.pairs, ns.cmd_id),
        url=ns.url,
        timeout=ns.timeout,
        quiet=ns.quiet,
        json_output=ns.json_output,
    )


# -- Twisted / Autobahn shell -------------------------------------------------


class _ClientProtocol(WebSocketClientProtocol):
    """Autobahn shell: hands every happening to the factory's L{_Runner}."""

    factory: _ClientFactory

    def onOpen(self) -> None:
        self.factory.runner.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.runner.received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Unclean: Autobahn wraps its own reason in 'connection was closed
        # uncleanly ("...")'; report the inner reason.
        if not wasClean and self.wasNotCleanReason:
            reason = self.wasNotCleanReason
        self.factory.runner.closed(code, reason)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.factory.runner.lost()


class _ClientFactory(WebSocketClientFactory):
    """Autobahn client factory carrying the L{_Runner} its protocol feeds."""

    protocol = _ClientProtocol  # type: ignore[assignment]

    def __init__(self, url: str, runner: _Runner, reactor: IReactorTime) -> None:
        super().__init__(url, reactor=reactor, useragent=f"{PROG}/{__version__}")
        self.runner = runner


class _Runner:
    """Connects the socket events to the L{CommandSession}.

    C{done} fires with the exit code when the session has decided; C{gone}
    fires when the TCP connection (if one was made) is lost.
    """

    def __init__(self, session: CommandSession, clock: IReactorTime) -> None:
        self._session = session
        self._clock = clock
        self.protocol: _ClientProtocol | None = None
        self._open = False
        self.done: Deferred[int] = Deferred()
        self.gone: Deferred[None] = Deferred()

    def _decided(self, code: int | None) -> None:
        if code is not None and not self.done.called:
            self.done.callback(code)

    def connected(self, protocol: _ClientProtocol) -> None:
        """The TCP (or TLS/unix) connection is up; the handshake starts."""
        self.protocol = protocol

    def connect_failed(self, failure: Failure) -> None:
        """The connection attempt failed or was cancelled."""
        if failure.check(CancelledError):
            reason = "connection attempt cancelled"
        else:
            reason = failure.getErrorMessage()
        self._decided(self._session.connection_failed(reason))

    def opened(self, protocol: _ClientProtocol) -> None:
        """The WebSocket is open: send the request."""
        self._open = True
        try:
            request = self._session.request()
        except ValueError as e:
            self._decided(self._session.connection_failed(f"cannot encode request: {e}"))
            return
        protocol.sendMessage(request.encode("utf-8"), isBinary=False)

    def received(self, payload: bytes) -> None:
        """One frame from the server."""
        self._decided(self._session.received(payload))

    def closed(self, code: int | None, reason: str | None) -> None:
        """Autobahn reports the WebSocket closed (or the handshake failed)."""
        if self._open:
            self._decided(self._session.connection_closed(code, reason))
        else:
            self._decided(self._session.handshake_failed(reason or "connection closed"))

    def lost(self) -> None:
        """The transport is gone: fire C{gone}; decide if nothing else did."""
        self.closed(None, "connection lost")
        if not self.gone.called:
            self.gone.callback(None)

    def timed_out(self, seconds: float) -> None:
        """The overall timeout expired."""
        self._decided(self._session.timed_out(seconds))

    async def disconnect(self) -> None:
        """Close the connection, if any, and wait until it is gone.

        A WebSocket close handshake when open, an abort otherwise; the
        transport is aborted after L{_LINGER_SECONDS} at the latest.
        """
        protocol = self.protocol
        if protocol is None or self.gone.called:
            return
        # connected, and not yet gone; ITransport itself has no abortConnection
        assert protocol.transport is not None
        transport = cast(ITCPTransport, protocol.transport)
        if protocol.state == WebSocketProtocol.STATE_OPEN:
            protocol.sendClose(code=1000)
        elif protocol.state not in (WebSocketProtocol.STATE_CLOSING, WebSocketProtocol.STATE_CLOSED):
            transport.abortConnection()  # still in the opening handshake

        def abort() -> None:
            if not self.gone.called:
                transport.abortConnection()

        killer = self._clock.callLater(_LINGER_SECONDS, abort)
        try:
            await self.gone
        finally:
            if killer.active():
                killer.cancel()


def _endpoint(reactor: Any, url: str) -> Any:
    """The client endpoint for a C{ws://}/C{wss://} URL.

    C{ws://unix:/path} connects to a unix socket; an IP literal host connects
    directly (a refusal is reported at once); a host name goes through
    C{HostnameEndpoint} (DNS, happy eyeballs); C{wss://} wraps TCP in TLS
    (checking the certificate against the host name).

    @raise ValueError: not a valid WebSocket URL (scheme, host, port...).
    @raise ImportError: C{wss://} without the TLS extras (pyOpenSSL,
        service_identity).
    """
    is_secure, host, port_or_path, _resource, _path, _params = parse_url(url)
    if host == "unix":
        return UNIXClientEndpoint(reactor, port_or_path)
    endpoint: IStreamClientEndpoint
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        endpoint = HostnameEndpoint(reactor, host, port_or_path)
    else:
        tcp = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        endpoint = tcp(reactor, host, port_or_path)
    if is_secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


async def run(
    reactor: IReactorTCP,
    options: ClientOptions,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command against the server; return the exit code.

    Connects to C{options.url}, sends the request, prints as described in
    L{CommandSession}, and returns 0, 1 or 2 (see the module docstring).
    Never raises for network or server problems and never hangs: it returns
    at the latest C{options.timeout} seconds plus the close linger
    (L{_LINGER_SECONDS}) after it starts.  The connection is closed (and
    gone) before it returns; the reactor is left running.

    @param reactor: provides C{IReactorTCP}, C{IReactorTime} (and
        C{IReactorUNIX} for C{ws://unix:} URLs).
    @param stdout: where results go (default: C{sys.stdout} at call time).
    @param stderr: where problems go (default: C{sys.stderr} at call time).
    """
    session = CommandSession(
        options.url,
        options.method,
        options.params,
        out=printer(sys.stdout if stdout is None else stdout),
        err=printer(sys.stderr if stderr is None else stderr),
        quiet=options.quiet,
        json_output=options.json_output,
    )
    clock: IReactorTime = reactor  # type: ignore[assignment]
    runner = _Runner(session, clock)
    try:
        endpoint = _endpoint(reactor, options.url)
        factory = _ClientFactory(options.url, runner, clock)
    except (ValueError, ImportError) as e:
        return session.connection_failed(str(e))

    timer = clock.callLater(options.timeout, runner.timed_out, options.timeout)
    connecting = endpoint.connect(factory)
    connecting.addCallbacks(runner.connected, runner.connect_failed)
    try:
        code = await runner.done
    finally:
        if timer.active():
            timer.cancel()
        connecting.cancel()  # a no-op once connected
    await runner.disconnect()
    return code


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point (C{callapi-client}, C{python -m callapi.cli.client}).

    @param argv: arguments without the program name (default C{sys.argv[1:]}).
    @raise SystemExit: always, with the exit code (2 and one stderr line for
        a usage error; 0 for C{--help}).
    """
    run_program(PROG, argv, parse_args, run)


if __name__ == "__main__":
    main()
