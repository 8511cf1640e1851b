"""
The Autobahn WebSocket shell of the client API: accepts connections on the
configured path, decodes text frames and hands them to a
L{callapi.rpc.Session}.  Nothing else happens here.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger

from callapi.logging import logger

from callapi.rpc import CommandRunner, Session

#: WebSocket close code for "unsupported data" (RFC 6455 section 7.4.1).
CLOSE_UNSUPPORTED_DATA = 1003


class CallApiProtocol(WebSocketServerProtocol):
    """
    One client connection.  Binary frames are refused with close code 1003;
    messages over the size limit are closed by Autobahn with 1009.
    """

    _log = logger()  # Autobahn owns self.log
    _session: Session | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn 26.10 calls setTcpNoDelay before copying the factory's
        # options and swallows the error: Nagle stays on and notifications
        # written after Started wait for the peer's delayed ACK (~40 ms).
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP (unix socket)

    def onConnect(self, request: Any) -> None:
        if request.path != self.factory.path:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND,
                                 f"no WebSocket endpoint at {request.path}; use {self.factory.path}")
        return None

    def onOpen(self) -> None:
        self._session = self.factory.runner.open(self._send_text, peer=str(self.peer))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            # sendClose() only takes 1000/3000-4999; 1003 is the right code.
            if self.state == self.STATE_OPEN:
                self.sendCloseFrame(code=CLOSE_UNSUPPORTED_DATA,
                                    reasonUtf8=b"binary frames are not supported: send JSON-RPC as text")
            return
        if self._session is not None:
            self._session.received(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self._session is not None:
            self.factory.runner.closed(self._session)
            self._session = None

    def _send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"), isBinary=False)


class CallApiFactory(WebSocketServerFactory):
    """
    @ivar runner: the daemon's L{CommandRunner}.
    @ivar path: the HTTP path that accepts WebSocket upgrades (e.g. C{/call-api}).
    """

    protocol = CallApiProtocol
    noisy = False

    def __init__(self, runner: CommandRunner, path: str = "/call-api",
                 max_message_size: int = 1 << 20, reactor: Any = None) -> None:
        """
        @param max_message_size: largest accepted message and frame, in
            bytes; larger ones close the connection with code 1009.
        """
        super().__init__(reactor=reactor)
        self.runner = runner
        self.path = path
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            autoPingInterval=30,
            autoPingTimeout=30,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            failByDrop=False,  # close with 1009 etc. instead of dropping TCP
        )
