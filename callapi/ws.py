"""
The Autobahn WebSocket shell of the client API: accepts connections on the
configured path, decodes text frames and hands them to a
L{callapi.rpc.Session}.  Nothing else happens here.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IListeningPort, IPushProducer, ITCPTransport

from callapi.logging import logger
from callapi.rpc import CommandRunner, Session

#: WebSocket close code for "unsupported data" (RFC 6455 section 7.4.1).
CLOSE_UNSUPPORTED_DATA = 1003


class CallApiProtocol(WebSocketServerProtocol):
    """
    One client connection.  Binary frames are refused with close code 1003;
    messages over the size limit are closed by Autobahn with 1009; a
    browser page from another origin is refused (403) unless allowed.

    Backpressure: while the client does not read what callapi writes (the
    TCP send buffer is over Twisted's 64 KiB), callapi stops reading the
    client's requests (a streaming producer on the transport), so a slow or
    hostile reader cannot make the daemon buffer without bound.
    """

    _log = logger()  # Autobahn owns self.log
    _session: Session | None = None
    maxMessagePayloadSize: int  # set by Autobahn's setProtocolOptions

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn 26.10 calls setTcpNoDelay before copying the factory's
        # options and swallows the error: Nagle stays on and notifications
        # written after Started wait for the peer's delayed ACK (~40 ms).
        try:
            cast(ITCPTransport, self.transport).setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP (unix socket)
        try:
            cast(IConsumer, self.transport).registerProducer(cast(IPushProducer, self), True)
        except (AttributeError, RuntimeError):
            pass

    # IPushProducer: the transport asks us to stop producing (writing)
    # when its buffer is full; we stop consuming the client's requests.

    def pauseProducing(self) -> None:
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        pass

    def onConnect(self, request: Any) -> None:
        if request.path != self.factory.path:
            raise ConnectionDeny(
                ConnectionDeny.NOT_FOUND, f"no WebSocket endpoint at {request.path}; use {self.factory.path}"
            )
        origin = request.origin or request.headers.get("origin")
        if origin is not None and not self.factory.origin_allowed(
            origin, _origin_host("ws://" + (request.host or ""))
        ):
            self._log.warn("refused a WebSocket handshake from origin {origin}", origin=origin)
            raise ConnectionDeny(
                ConnectionDeny.FORBIDDEN, f"origin {origin} is not allowed (see --allow-origin)"
            )
        return None

    def onOpen(self) -> None:
        self._session = self.factory.runner.open(self._send_text, peer=str(self.peer))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            # sendClose() only takes 1000/3000-4999; 1003 is the right code.
            if self.state == self.STATE_OPEN:
                self.sendCloseFrame(
                    code=CLOSE_UNSUPPORTED_DATA,
                    reasonUtf8=b"binary frames are not supported: send JSON-RPC as text",
                )
            return
        if self._session is not None:
            self._session.received(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self._session is not None:
            self.factory.runner.closed(self._session)
            self._session = None

    def _send_text(self, text: str) -> None:
        if self.state != self.STATE_OPEN:
            # the client is closing or gone: a routine race, not an error
            self._log.debug("dropped a message for a closing connection {peer}", peer=self.peer)
            return
        # Autobahn applies the *incoming* size limit to outgoing messages too
        # and raises; callapi's replies are bounded by the requests (batch
        # size, message size), so the limit is lifted for sending.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(text.encode("utf-8"), isBinary=False)
        finally:
            self.maxMessagePayloadSize = limit


class CallApiFactory(WebSocketServerFactory):
    """
    @ivar runner: the daemon's L{CommandRunner}.
    @ivar path: the HTTP path that accepts WebSocket upgrades (e.g. C{/call-api}).
    """

    protocol = CallApiProtocol
    noisy = False

    def __init__(
        self,
        runner: CommandRunner,
        path: str = "/call-api",
        max_message_size: int = 1 << 20,
        reactor: Any = None,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        """
        @param max_message_size: largest accepted message and frame, in
            bytes; larger ones close the connection with code 1009.
        @param allowed_origins: browser origins (C{scheme://host[:port]})
            allowed besides same-host and loopback ones; C{"*"} allows any.
        """
        super().__init__(reactor=reactor)
        self.runner = runner
        self.path = path
        self.allowed_origins = tuple(o.rstrip("/").lower() for o in allowed_origins)

        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            autoPingInterval=30,
            autoPingTimeout=30,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            failByDrop=False,  # close with 1009 etc. instead of dropping TCP
        )

    def origin_allowed(self, origin: str, request_host: str) -> bool:
        """
        See L{origin_allowed}.
        """
        return origin_allowed(origin, request_host, self.allowed_origins)


class WebSocketService(StreamServerEndpointService):
    """
    Listens on an endpoint with a L{CallApiFactory}.  A failure to listen
    at start (port in use) raises from C{privilegedStartService}, so that
    the root service can exit with one line.
    """

    _raiseSynchronously = True

    def __init__(self, endpoint: Any, factory: CallApiFactory) -> None:
        super().__init__(endpoint, factory)
        self._waiters: list[Deferred[IListeningPort]] = []

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        finally:
            waiters, self._waiters = self._waiters, []
            if self._waitingForPort is not None:
                for d in waiters:
                    self._chain(d)

    def when_listening(self) -> Deferred[IListeningPort]:
        """
        @return: fires with the L{IListeningPort} once the service listens
            (also when asked before it started); fails with C{RuntimeError}
            when listening failed or was cancelled by a stop.
        """
        d: Deferred[IListeningPort] = Deferred()
        if self._waitingForPort is None:
            self._waiters.append(d)
        else:
            self._chain(d)
        return d

    def _chain(self, d: Deferred[IListeningPort]) -> None:
        def listening(port: Any) -> Any:
            # Twisted's own errback before this one logs a failure and
            # leaves None: the service does not listen.
            if port is None:
                d.errback(RuntimeError("the WebSocket service is not listening"))
            else:
                d.callback(port)
            return port

        waiting = self._waitingForPort
        assert waiting is not None
        waiting.addCallback(listening)


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _origin_host(origin: str) -> str:
    rest = origin.split("://", 1)[-1]
    host = rest.split("/", 1)[0]
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def origin_allowed(origin: str, request_host: str, allowed: tuple[str, ...]) -> bool:
    """
    Whether a browser page from C{origin} may open a WebSocket.

    Allowed: pages from a loopback host, from the IP address the client
    connected to (C{request_host}, the C{Host} header without port, when it
    is an IP literal: a host *name* there could be DNS rebinding), and
    those listed in C{allowed} (C{"*"} = any).  Cross-site pages are refused, so a web
    page open in a browser on the same machine cannot drive calls
    (RFC 6455 section 10.2).  Clients that are not browsers send no Origin
    and are not affected.
    """
    normalised = origin.rstrip("/").lower()
    if "*" in allowed or normalised in allowed:
        return True
    host = _origin_host(normalised)
    if host in _LOOPBACK_HOSTS:
        return True
    # Same host only when the client addressed callapi by IP: a *name* in
    # Host equal to the page's could be DNS rebinding (an attacker's name
    # re-resolved to callapi's address).
    request_host = (request_host or "").lower()
    return host == request_host and _is_ip_literal(request_host)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
