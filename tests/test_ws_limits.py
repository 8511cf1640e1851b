"""
The WebSocket shell's protections, over real loopback sockets: replies
larger than the incoming limit still go out, deep nesting and huge batches
are refused, cross-site browser pages are refused, and a client that does
not read stops being read.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint

from callapi import jsonrpc
from callapi.testing.daemon import DaemonHarness, start_daemon, until
from callapi.testing.wsclient import ClientFactory, JSONRPCClientProtocol
from callapi.ws import CallApiProtocol, origin_allowed


@pytest_twisted.ensureDeferred
async def test_reply_larger_than_the_incoming_limit_is_sent(reactor: Any) -> None:
    """
    Autobahn applies the incoming size limit to outgoing messages; an Echo
    just under the limit has a Reply over it, which must still arrive.
    """
    started = await start_daemon(reactor, "--max-message-size", "1000")
    try:
        client = await started.client()
        result = await client.command("Echo", {"x": "y" * 900})
        assert result.events == ["Reply", "Ended"]
        assert result.data("Reply") == [{"x": "y" * 900}]
        client.sendClose()
    finally:
        await started.stop()


@pytest_twisted.ensureDeferred
async def test_deep_nesting_and_huge_batches_are_refused(daemon: DaemonHarness) -> None:
    client = await daemon.client()
    deep = "[" * (jsonrpc.MAX_DEPTH + 1) + "]" * (jsonrpc.MAX_DEPTH + 1)
    client.send_json('{"jsonrpc":"2.0","id":1,"method":"Echo","params":{"a":%s}}' % deep)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "Echo"} for i in range(jsonrpc.MAX_BATCH + 1)]
    client.send_json(batch)
    await until(daemon.reactor, lambda: len(client.received) == 2)
    assert client.received[0]["error"] == {
        "code": -32700,
        "message": "Parse error",
        "data": f"nested deeper than {jsonrpc.MAX_DEPTH} levels",
    }
    assert client.received[1] == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32600,
            "message": "Invalid Request",
            "data": f"batch of {jsonrpc.MAX_BATCH + 1} requests; at most {jsonrpc.MAX_BATCH}",
        },
    }
    assert daemon.runner.running == {}
    client.sendClose()


async def _connect_with_origin(reactor: Any, port: int, origin: str) -> Any:
    factory = ClientFactory(f"ws://127.0.0.1:{port}/call-api", reactor=reactor, origin=origin)
    factory.protocol = JSONRPCClientProtocol
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return await factory.opened


@pytest_twisted.ensureDeferred
async def test_cross_site_origin_refused_local_allowed(daemon: DaemonHarness) -> None:
    with pytest.raises(ConnectionError):
        await _connect_with_origin(daemon.reactor, daemon.port, "https://evil.example")
    local = await _connect_with_origin(daemon.reactor, daemon.port, "http://localhost:8000")
    assert (await local.command("Echo", {})).events == ["Reply", "Ended"]
    local.sendClose()


@pytest.mark.parametrize(
    "origin, host, allowed, expected",
    [
        ("http://localhost:3000", "10.0.0.5", (), True),
        ("http://127.0.0.1", "10.0.0.5", (), True),
        # a host *name* equal to the page's could be DNS rebinding: refused
        ("https://callapi.example.com", "callapi.example.com", (), False),
        ("http://rebind.attacker.example:5059", "rebind.attacker.example", (), False),
        ("http://10.0.0.5:8080", "10.0.0.5", (), True),
        ("https://evil.example", "callapi.example.com", (), False),
        ("https://app.example.com", "10.0.0.5", ("https://app.example.com",), True),
        ("https://APP.example.com/", "10.0.0.5", ("https://app.example.com",), True),
        ("https://other.example.com", "10.0.0.5", ("https://app.example.com",), False),
        ("null", "10.0.0.5", (), False),
        ("https://evil.example", "10.0.0.5", ("*",), True),
    ],
)
def test_origin_policy(origin: str, host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert origin_allowed(origin, host, allowed) is expected


def test_slow_reader_is_not_read_from() -> None:
    """
    When the transport's send buffer is full it pauses its producer: the
    protocol then stops reading the client's requests until it drains.
    """
    calls: list[str] = []

    class Transport:
        def pauseProducing(self) -> None:
            calls.append("pause")

        def resumeProducing(self) -> None:
            calls.append("resume")

    protocol = CallApiProtocol()
    protocol.transport = Transport()  # type: ignore[assignment]
    protocol.pauseProducing()
    protocol.resumeProducing()
    assert calls == ["pause", "resume"]
