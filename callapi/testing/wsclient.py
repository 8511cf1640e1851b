"""
A small asynchronous WebSocket JSON-RPC client for tests and benchmarks:
many commands in flight on one connection, each collected until its
C{Ended}.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint


class CommandResult:
    """
    What came back for one command.

    @ivar response: the JSON-RPC response (C{result} or C{error}) object;
        C{None} until it came.
    @ivar notifications: the C{params} of each notification, in order.
    @ivar events: just the event names, in order.
    """

    def __init__(self) -> None:
        self.response: Any = None
        self.notifications: list[dict[str, Any]] = []
        self.done: Deferred[CommandResult] = Deferred()

    @property
    def events(self) -> list[str]:
        """The C{event} of every notification, in order."""
        return [n["event"] for n in self.notifications]

    def data(self, event: str) -> list[Any]:
        """
        The C{data} of every notification named C{event}.
        """
        return [n.get("data") for n in self.notifications if n["event"] == event]


class ClientFactory(WebSocketClientFactory):
    """
    The factory L{connect} uses (with L{JSONRPCClientProtocol}): set
    C{opened} to a new Deferred; it fires with the open protocol.
    """

    opened: Deferred[JSONRPCClientProtocol]


class JSONRPCClientProtocol(WebSocketClientProtocol):
    """
    Sends requests with L{command}; routes responses by id and
    notifications by cmd_id.  C{received} keeps every raw message in order.
    """

    factory: ClientFactory  # or any factory with the same C{opened}

    def onOpen(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._by_id: dict[Any, CommandResult] = {}
        self._by_cmd: dict[str, CommandResult] = {}
        self.closed: Deferred[Any] = Deferred()
        self.factory.opened.callback(self)

    def send_json(self, message: Any) -> None:
        """
        Send any JSON value (or a raw C{str}/C{bytes} text frame).
        """
        if isinstance(message, (str, bytes)):
            data = message.encode() if isinstance(message, str) else message
        else:
            data = json.dumps(message).encode()
        self.sendMessage(data, isBinary=False)

    def command(
        self, method: str, params: dict[str, Any] | None = None, cmd_id: str | None = None
    ) -> Deferred[CommandResult]:
        """
        Send one request; the Deferred fires with a L{CommandResult} after
        its C{Ended} notification, or at once for an error response.
        """
        request_id = next(self._ids)
        params = dict(params or {})
        if cmd_id is not None:
            params["cmd_id"] = cmd_id
        result = CommandResult()
        self._by_id[request_id] = result
        self.send_json({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return result.done

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.received.append(message)
        if isinstance(message, list):
            return
        if "id" in message:
            result = self._by_id.pop(message["id"], None)
            if result is None:
                return
            result.response = message
            if "error" in message:
                result.done.callback(result)
            else:
                cmd_id = message["result"]["cmd_id"]
                self._by_cmd[cmd_id] = result
            return
        params = message.get("params", {})
        result = self._by_cmd.get(params.get("cmd_id"))
        if result is None:
            return
        result.notifications.append(params)
        if params.get("event") == "Ended":
            del self._by_cmd[params["cmd_id"]]
            result.done.callback(result)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.close_code = code
        self.close_reason = reason
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed: {code} {reason}"))
        if hasattr(self, "closed") and not self.closed.called:
            self.closed.callback((code, reason))


def connect(
    reactor: Any, port: int, path: str = "/call-api", host: str = "127.0.0.1"
) -> Deferred[JSONRPCClientProtocol]:
    """
    Open one WebSocket connection to a callapi daemon.

    @return: a Deferred firing with the open L{JSONRPCClientProtocol}.
    """
    factory = ClientFactory(f"ws://{host}:{port}{path}", reactor=reactor)
    factory.protocol = JSONRPCClientProtocol
    factory.opened = Deferred()
    d = TCP4ClientEndpoint(reactor, host, port).connect(factory)
    d.addErrback(lambda f: factory.opened.errback(f) if not factory.opened.called else None)
    return factory.opened
