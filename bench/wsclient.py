"""
The WebSocket clients of the bench (RFC 6455).

L{RawWebSocketClient} is a minimal client written for the bench (masked text
frames out, ping -> pong, close); L{AutobahnClient} offers the same interface
on Autobahn (C{--client autobahn}).  Both have C{send_text(bytes)}, C{close()},
an C{on_text(bytes)} callback and an C{opened} Deferred that fires with the
protocol once the handshake succeeded.  L{websocket_ready} is a blocking probe
for the orchestrator.  Importing this module does not install a reactor.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet.protocol import Protocol

#: RFC 6455 section 1.3: appended to Sec-WebSocket-Key to make Sec-WebSocket-Accept
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake_request(host: str, port: int, path: str, key: bytes) -> bytes:
    """
    The opening handshake's HTTP request (RFC 6455 section 4.1).

    @param key: the base64 C{Sec-WebSocket-Key}.
    """
    return (
        b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), host.encode(), port, key)
    )


class RawWebSocketClient(Protocol):
    """
    A minimal RFC 6455 client: one handshake, masked text frames out,
    unmasked frames in (text, ping -> pong, close).  It needs about
    half the CPU of Autobahn's client per message, so one client
    process keeps the daemon saturated on a 2-core machine.
    """

    transport: Any

    def __init__(self, host: str, port: int, path: str, opened: Any) -> None:
        self._host, self._port, self._path = host, port, path
        self.opened = opened
        self._buf = b""
        self._open = False
        self._fragments: list[bytes] = []
        self.on_text: Callable[[bytes], None] = lambda payload: None
        self._rand = random.Random()

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.setTcpNoDelay(True)
        self.transport.write(handshake_request(self._host, self._port, self._path, key))

    def send_text(self, payload: bytes) -> None:
        """
        Send one text message (a single masked frame).
        """
        self._send_frame(0x1, payload)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
        mask = self._rand.getrandbits(32).to_bytes(4, "big")
        if n:
            masked = (
                int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            ).to_bytes(n, "big")
        else:
            masked = b""
        self.transport.write(header + mask + masked)

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            head = buf[:end]
            if not head.startswith(b"HTTP/1.1 101") or self._accept not in head:
                self.transport.abortConnection()
                if not self.opened.called:
                    self.opened.errback(
                        ConnectionError("handshake refused: " + head.split(b"\r\n", 1)[0].decode("latin-1"))
                    )
                return
            self._open = True
            buf = buf[end + 4 :]
            self.opened.callback(self)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:
                start += 4  # servers must not mask; tolerate by skipping the key
            if size < start + n:
                break
            payload = buf[start : start + n]
            pos = start + n
            opcode = b0 & 0x0F
            if opcode in (0x1, 0x2, 0x0):
                if not b0 & 0x80:
                    self._fragments.append(payload)
                    continue
                if self._fragments:
                    payload = b"".join(self._fragments) + payload
                    self._fragments = []
                self.on_text(payload)
            elif opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                self._send_frame(0x8, payload[:2])
                self.transport.loseConnection()
                break
        self._buf = buf[pos:]

    def connectionLost(self, reason: Any = None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(str(reason.value)))

    def close(self) -> None:
        """
        Drop the connection at once (no closing handshake).
        """
        self.transport.abortConnection()


class AutobahnClient(WebSocketClientProtocol):
    """
    The same interface on Autobahn (what callapi.testing.wsclient uses).
    """

    on_text: Callable[[bytes], None] = staticmethod(lambda payload: None)  # type: ignore
    # Autobahn calls setTcpNoDelay(self.tcpNoDelay) before it copies the
    # factory's options onto the protocol; without a class attribute the
    # AttributeError is swallowed and Nagle stays on (NEWS.md, 0.1.0).
    tcpNoDelay = True

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.on_text(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed: {code} {reason}"))

    def send_text(self, payload: bytes) -> None:
        """
        Send one text message.
        """
        self.sendMessage(payload, isBinary=False)

    def close(self) -> None:
        """
        Drop the connection at once (no closing handshake).
        """
        transport: Any = self.transport
        transport.abortConnection()


def websocket_ready(port: int, path: str) -> bool:
    """
    One blocking WebSocket handshake (then close) against the daemon on
    127.0.0.1:C{port}; C{False} on any socket error or refusal (1 s timeout).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            key = base64.b64encode(os.urandom(16))
            s.sendall(handshake_request("127.0.0.1", port, path, key))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                head += chunk
            ok = head.startswith(b"HTTP/1.1 101")
            if ok:
                s.sendall(bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
            return ok
    except OSError:
        return False
