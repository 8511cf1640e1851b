"""``callapi-client``: send one command to a callapi server and follow it to its end.

Synopsis::

    callapi-client [--url URL] [--timeout SECONDS] [--cmd-id ID] [--quiet | --json]
                   METHOD [key=value ...] [key:=JSON ...]

The client opens one WebSocket connection, sends one JSON-RPC 2.0 request
``{"jsonrpc": "2.0", "id": 1, "method": METHOD, "params": {...}}``, prints the
``Started`` result and then every notification of that command, one line each,
until the command's ``Ended`` notification.

Exit codes (see :data:`EXIT_OK`, :data:`EXIT_COMMAND_FAILED`, :data:`EXIT_ERROR`):

- 0: the command ended (``Ended``) without an ``Error`` notification;
- 1: the command ended after an ``Error`` notification;
- 2: anything else: usage error, connection failure (refused, bad URL, DNS,
  handshake), JSON-RPC error response, unparsable or unexpected server frame,
  the server closing the connection before ``Ended``, or the timeout.

The module is split in two: :class:`CommandSession` is pure (no Autobahn, no
reactor) and decides what each server message means and which exit code
results; :func:`run` is the thin Twisted/Autobahn shell that feeds it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import sys
from collections.abc import Callable, Sequence
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

PROG = "callapi-client"
DEFAULT_URL = "ws://127.0.0.1:5059/call-api"
#: Longer than the daemon's own bounds (ring 60 s + transfer start 15 s + outcome 130 s).
DEFAULT_TIMEOUT = 300.0
REQUEST_ID = 1

EXIT_OK = 0
"""The command ended without an ``Error`` notification."""
EXIT_COMMAND_FAILED = 1
"""The command ended after an ``Error`` notification."""
EXIT_ERROR = 2
"""Usage, connection, protocol or JSON-RPC error, early close, or timeout."""

# After the outcome is known, how long (seconds) we let the WebSocket closing
# handshake run before aborting the TCP connection.  Autobahn's own close
# timeouts (1 s + 1 s) normally end it first; this is the backstop.
_LINGER_SECONDS = 3.0
_EXCERPT_CHARS = 200

_MISSING: Any = object()


class UsageError(Exception):
    """A bad command line; ``str(error)`` is the one-line explanation."""


def _reject_constant(name: str) -> Any:
    """``json.loads`` hook refusing ``NaN``/``Infinity``, which are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> Any:
    """Parse strict JSON text; raise ``ValueError`` on anything else."""
    return json.loads(text, parse_constant=_reject_constant)


def compact(value: Any) -> str:
    """Encode ``value`` as compact one-line JSON (no spaces, UTF-8 kept as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _excerpt(text: str) -> str:
    """Shorten ``text`` to at most about :data:`_EXCERPT_CHARS` characters."""
    if len(text) <= _EXCERPT_CHARS:
        return text
    return text[:_EXCERPT_CHARS] + "..."


def parse_pair(arg: str) -> tuple[str, Any]:
    """Parse one httpie-style parameter.

    ``key=value`` gives the string ``value``; ``key:=JSON`` gives the decoded
    JSON value (any type).  The first ``=`` separates key and value, so values
    may contain ``=`` and ``:=``.

    :returns: ``(key, value)``.
    :raises UsageError: no ``=``, an empty key, or a ``:=`` value that is not
        strict JSON (``NaN``/``Infinity`` are refused).
    """
    eq = arg.find("=")
    if eq < 0:
        raise UsageError(
            f"bad parameter {arg!r}: expected key=value or key:=JSON"
        )
    typed = eq > 0 and arg[eq - 1] == ":"
    key = arg[: eq - 1] if typed else arg[:eq]
    raw = arg[eq + 1 :]
    if not key:
        raise UsageError(f"bad parameter {arg!r}: empty key")
    if not typed:
        return key, raw
    try:
        return key, _load_json(raw)
    except ValueError as e:
        raise UsageError(f"bad parameter {arg!r}: value is not JSON ({e})") from None


def parse_params(pairs: Sequence[str], cmd_id: str | None = None) -> dict[str, Any]:
    """Build the request's ``params`` object from ``key=value``/``key:=JSON`` pairs.

    :param cmd_id: if not ``None``, added as the ``cmd_id`` parameter.
    :returns: a new dict, in command-line order (``cmd_id`` last).
    :raises UsageError: a malformed pair (see :func:`parse_pair`), a key given
        twice, or ``cmd_id`` given both as a pair and as ``cmd_id``.
    """
    params: dict[str, Any] = {}
    for arg in pairs:
        key, value = parse_pair(arg)
        if key in params:
            raise UsageError(f"parameter {key!r} given twice")
        params[key] = value
    if cmd_id is not None:
        if "cmd_id" in params:
            raise UsageError("cmd_id given both as --cmd-id and as a parameter")
        params["cmd_id"] = cmd_id
    return params


@dataclass(frozen=True)
class ClientOptions:
    """What one ``callapi-client`` run does.

    :ivar method: the JSON-RPC method (case-sensitive, e.g. ``"CallStart"``).
    :ivar params: the request's ``params`` object (includes ``cmd_id`` if set).
    :ivar url: WebSocket URL, ``ws://``/``wss://`` (``ws://unix:/path`` for a
        unix socket).
    :ivar timeout: seconds, from the start of the run to ``Ended``.
    :ivar quiet: print nothing on stdout (errors still go to stderr).
    :ivar json_output: print each relevant server message as raw JSON instead.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    url: str = DEFAULT_URL
    timeout: float = DEFAULT_TIMEOUT
    quiet: bool = False
    json_output: bool = False


class _ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` raising :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _make_parser() -> _ArgumentParser:
    """The command-line parser (``--help`` text included)."""
    parser = _ArgumentParser(
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
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up (exit 2) when Ended has not arrived after this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--cmd-id", metavar="ID", help="cmd_id to give the command (default: the server picks one)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", "-q", action="store_true", help="print nothing on stdout; errors still go to stderr")
    output.add_argument("--json", dest="json_output", action="store_true", help="print the raw JSON messages, one per line")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("method", metavar="METHOD", help="JSON-RPC method, e.g. Echo, CallStart, CallEnd")
    parser.add_argument("pairs", metavar="PARAM", nargs="*", help="key=value (string) or key:=JSON (typed)")
    return parser


def parse_args(argv: Sequence[str]) -> ClientOptions:
    """Parse the command line (without the program name).

    Options may come before or after ``METHOD`` and the parameters.  ``--help``
    and ``--version`` print and raise ``SystemExit(0)``.

    :raises UsageError: unknown option, missing METHOD, bad ``--timeout``,
        empty ``--cmd-id``, or a bad parameter (see :func:`parse_params`).
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


def _is_our_id(value: object, request_id: int) -> bool:
    """True if a response ``id`` is exactly our integer id (``true``/``1.0`` are not)."""
    return type(value) is int and value == request_id


class CommandSession:
    """What the server's messages mean for one command, and the exit code.

    Pure: no Autobahn, no reactor.  The shell calls :meth:`request` once the
    WebSocket is open and sends its text, then feeds every received frame to
    :meth:`received` and every other happening to :meth:`connection_failed`,
    :meth:`handshake_failed`, :meth:`connection_closed` or :meth:`timed_out`.
    Each of those returns the exit code once the outcome is known (``None``
    while the command runs); the first outcome wins and later inputs are
    absorbed without output.

    Output goes through the ``out``/``err`` callables, one line per call
    (without newline).  On ``out``: the ``Started`` line (``Started`` plus the
    result's other keys as compact JSON, e.g. ``Started {"cmd_id":"c1"}``) and
    one line per notification of our ``cmd_id``: ``EVENT`` plus compact JSON
    ``data`` when present; with ``json_output``, each such message as compact
    raw JSON instead; with ``quiet``, nothing.  On ``err``: one line per
    failure, prefixed ``callapi-client:``; in quiet mode the ``Error``
    notification's data too, so the reason is not lost.

    Notifications that arrive before the ``Started`` result (the contract
    forbids it, but a racy server might) are held and replayed after it;
    notifications of other ``cmd_id`` values are ignored.

    :param url: only used in messages.
    :param method: the JSON-RPC method to call.
    :param params: the request's ``params`` object.
    """

    def __init__(
        self,
        url: str,
        method: str,
        params: dict[str, Any],
        *,
        out: Callable[[str], None],
        err: Callable[[str], None],
        quiet: bool = False,
        json_output: bool = False,
        request_id: int = REQUEST_ID,
    ) -> None:
        self._url = url
        self._method = method
        self._params = params
        self._out = out
        self._err = err
        self._quiet = quiet
        self._json_output = json_output
        self._request_id = request_id
        self._opened = False
        self._cmd_id: str | None = None
        self._failed = False
        self._early: list[dict[str, Any]] = []
        self.exit_code: int | None = None
        """``None`` while running, then the process exit code (0, 1 or 2)."""

    @property
    def cmd_id(self) -> str | None:
        """The command's ``cmd_id`` from the ``Started`` result, else ``None``."""
        return self._cmd_id

    def request(self) -> str:
        """Note that the WebSocket is open; return the request as JSON text.

        :raises ValueError: params that cannot be JSON-encoded (``NaN``).
        """
        self._opened = True
        return compact(
            {
                "jsonrpc": "2.0",
                "id": self._request_id,
                "method": self._method,
                "params": self._params,
            }
        )

    def received(self, payload: bytes | str) -> int | None:
        """Handle one WebSocket frame (UTF-8 bytes or text) from the server.

        :returns: the exit code if this frame decides the outcome (``Ended``
            -> 0 or 1; JSON-RPC error, unparsable or unexpected frame -> 2),
            else ``None``.
        """
        if self.exit_code is not None:
            return self.exit_code
        text = ""
        try:
            text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
            message = _load_json(text)
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            return self._finish(
                EXIT_ERROR, f"unparsable frame from server ({e}): {_excerpt(text)!r}"
            )
        if not isinstance(message, dict):
            return self._unexpected(message)
        if "method" in message and "id" not in message:
            return self._notification(message)
        if "id" in message and ("result" in message or "error" in message):
            return self._response(message)
        return self._unexpected(message)

    def connection_failed(self, reason: str) -> int:
        """The connection could not be made (bad URL, DNS, refused, TLS...).

        :returns: :data:`EXIT_ERROR` (or the earlier outcome).
        """
        return self._finish(EXIT_ERROR, f"cannot connect to {self._url}: {reason}")

    def handshake_failed(self, reason: str) -> int:
        """The TCP connection was made but the WebSocket opening handshake failed.

        :returns: :data:`EXIT_ERROR` (or the earlier outcome).
        """
        return self._finish(
            EXIT_ERROR, f"WebSocket handshake with {self._url} failed: {reason}"
        )

    def connection_closed(self, code: int | None = None, reason: str | None = None) -> int:
        """The open WebSocket connection closed (either side, clean or not).

        :param code: the WebSocket close code, if known.
        :param reason: the close reason, if any.
        :returns: :data:`EXIT_ERROR` unless the outcome was already known.
        """
        if self.exit_code is not None:
            return self.exit_code
        waiting = "Ended" if self._cmd_id is not None else "a response"
        detail = ""
        if code is not None or reason:
            detail = f" (code {code}" + (f": {reason}" if reason else "") + ")"
        return self._finish(
            EXIT_ERROR, f"server closed the connection before {waiting}{detail}"
        )

    def timed_out(self, seconds: float) -> int:
        """The overall timeout of ``seconds`` expired.

        :returns: :data:`EXIT_ERROR` unless the outcome was already known.
        """
        if not self._opened:
            doing = f"connecting to {self._url}"
        elif self._cmd_id is None:
            doing = "waiting for the response"
        else:
            doing = "waiting for Ended"
        return self._finish(EXIT_ERROR, f"timed out after {seconds:g} seconds {doing}")

    # -- internals ---------------------------------------------------------

    def _finish(self, code: int, problem: str | None = None) -> int:
        """Record the outcome once; report ``problem`` on stderr."""
        if self.exit_code is not None:
            return self.exit_code
        self.exit_code = code
        if problem is not None:
            self._err(f"{PROG}: {problem}")
        return code

    def _unexpected(self, message: Any) -> int:
        return self._finish(
            EXIT_ERROR, f"unexpected message from server: {_excerpt(compact(message))}"
        )

    def _response(self, message: dict[str, Any]) -> int | None:
        response_id = message["id"]
        if "error" in message:
            error = message["error"]
            # An id of null answers a request the server could not read: ours.
            ours = response_id is None or _is_our_id(response_id, self._request_id)
            if not ours or not isinstance(error, dict) or self._cmd_id is not None:
                return self._unexpected(message)
            if self._json_output:
                self._out(compact(message))
            line = f"JSON-RPC error {error.get('code')}: {error.get('message')}"
            if "data" in error:
                line += f" (data: {compact(error['data'])})"
            return self._finish(EXIT_ERROR, line)
        result = message["result"]
        if (
            not _is_our_id(response_id, self._request_id)
            or self._cmd_id is not None
            or not isinstance(result, dict)
            # "status" is what some upstream docs call the key
            or result.get("event", result.get("status")) != "Started"
            or not isinstance(result.get("cmd_id"), str)
        ):
            return self._unexpected(message)
        self._cmd_id = result["cmd_id"]
        rest = {k: v for k, v in result.items() if k not in ("event", "status")}
        self._show(message, "Started", rest)
        early, self._early = self._early, []
        for held in early:
            code = self._notification(held)
            if code is not None:
                return code
        return None

    def _notification(self, message: dict[str, Any]) -> int | None:
        params = message.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("event"), str):
            return self._unexpected(message)
        if self._cmd_id is None:
            self._early.append(message)
            return None
        if params.get("cmd_id") != self._cmd_id:
            return None
        event = params["event"]
        data = params.get("data", _MISSING)
        self._show(message, event, data)
        if event == "Error":
            self._failed = True
            if self._quiet:
                if data is _MISSING:
                    shown = "(no data)"
                else:
                    shown = data if isinstance(data, str) else compact(data)
                self._err(f"{PROG}: Error: {shown}")
        elif event == "Ended":
            return self._finish(EXIT_COMMAND_FAILED if self._failed else EXIT_OK)
        return None

    def _show(self, message: dict[str, Any], event: str, data: Any) -> None:
        if self._quiet:
            return
        if self._json_output:
            self._out(compact(message))
        elif data is _MISSING:
            self._out(event)
        else:
            self._out(f"{event} {compact(data)}")


# -- Twisted / Autobahn shell -------------------------------------------------


class _ClientProtocol(WebSocketClientProtocol):
    """Autobahn shell: hands every happening to the factory's :class:`_Runner`."""

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
    """Autobahn client factory carrying the :class:`_Runner` its protocol feeds."""

    protocol = _ClientProtocol  # type: ignore[assignment]

    def __init__(self, url: str, runner: _Runner, reactor: IReactorTime) -> None:
        super().__init__(url, reactor=reactor, useragent=f"{PROG}/{__version__}")
        self.runner = runner


class _Runner:
    """Connects the socket events to the :class:`CommandSession`.

    ``done`` fires with the exit code when the session has decided; ``gone``
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
        """The transport is gone: fire ``gone``; decide if nothing else did."""
        self.closed(None, "connection lost")
        if not self.gone.called:
            self.gone.callback(None)

    def timed_out(self, seconds: float) -> None:
        """The overall timeout expired."""
        self._decided(self._session.timed_out(seconds))

    async def disconnect(self) -> None:
        """Close the connection, if any, and wait until it is gone.

        A WebSocket close handshake when open, an abort otherwise; the
        transport is aborted after :data:`_LINGER_SECONDS` at the latest.
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
    """The client endpoint for a ``ws://``/``wss://`` URL.

    ``ws://unix:/path`` connects to a unix socket; an IP literal host connects
    directly (a refusal is reported at once); a host name goes through
    ``HostnameEndpoint`` (DNS, happy eyeballs); ``wss://`` wraps TCP in TLS
    (checking the certificate against the host name).

    :raises ValueError: not a valid WebSocket URL (scheme, host, port...).
    :raises ImportError: ``wss://`` without the TLS extras (pyOpenSSL,
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


def _printer(stream: TextIO) -> Callable[[str], None]:
    """A callable writing one line to ``stream`` and flushing it."""

    def write(line: str) -> None:
        print(line, file=stream, flush=True)

    return write


async def run(
    reactor: IReactorTCP,
    options: ClientOptions,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command against the server; return the exit code.

    Connects to ``options.url``, sends the request, prints as described in
    :class:`CommandSession`, and returns 0, 1 or 2 (see the module docstring).
    Never raises for network or server problems and never hangs: it returns
    at the latest ``options.timeout`` seconds plus the close linger
    (:data:`_LINGER_SECONDS`) after it starts.  The connection is closed (and
    gone) before it returns; the reactor is left running.

    :param reactor: provides ``IReactorTCP``, ``IReactorTime`` (and
        ``IReactorUNIX`` for ``ws://unix:`` URLs).
    :param stdout: where results go (default: ``sys.stdout`` at call time).
    :param stderr: where problems go (default: ``sys.stderr`` at call time).
    """
    session = CommandSession(
        options.url,
        options.method,
        options.params,
        out=_printer(sys.stdout if stdout is None else stdout),
        err=_printer(sys.stderr if stderr is None else stderr),
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
    """Console entry point (``callapi-client``, ``python -m callapi.cli.client``).

    :param argv: arguments without the program name (default ``sys.argv[1:]``).
    :raises SystemExit: always, with the exit code (2 and one stderr line for
        a usage error; 0 for ``--help``).
    """
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{PROG}: error: {e} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None

    from twisted.internet.task import react

    async def _main(reactor: Any) -> None:
        raise SystemExit(await run(reactor, options))

    react(_main)


if __name__ == "__main__":
    main()
