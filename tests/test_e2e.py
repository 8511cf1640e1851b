"""
End-to-end: the real daemon service tree (WebSocket server, MI socket, event
socket, subscriptions) against the OpenSIPS emulator, over real loopback
sockets on ephemeral ports.  Each test pins the exact notification sequence a
client sees.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from callapi.emulator import Phone, start_emulator
from callapi.tap import Options, makeService
from callapi.testing.daemon import DaemonHarness, start_daemon, until, websocket_port
from callapi.testing.wsclient import connect

HOLD = ["CallHolding", "CallHoldStart", "CallHoldStart", "CallHoldSuccessful", "CallHoldSuccessful", "Ended"]
UNHOLD = [
    "CallUnholding",
    "CallUnholdStart",
    "CallUnholdStart",
    "CallUnholdSuccessful",
    "CallUnholdSuccessful",
    "Ended",
]


@pytest_twisted.ensureDeferred
async def test_subscribes_to_the_three_events(daemon: DaemonHarness) -> None:
    socket = daemon.opensips.event_socket
    assert socket.startswith("udp:127.0.0.1:")
    subscribed = {event for (event, s) in daemon.emu.subscribers if s == socket}
    assert subscribed == {"E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED"}
    assert daemon.opensips.subscriptions is not None
    assert all(daemon.opensips.subscriptions.status[e]["ok"] for e in subscribed)


@pytest_twisted.ensureDeferred
async def test_echo(daemon: DaemonHarness) -> None:
    client = await daemon.client()
    result = await client.command("Echo", {"hello": ["world", 1]}, cmd_id="e1")
    assert result.response == {"jsonrpc": "2.0", "id": 1, "result": {"cmd_id": "e1", "event": "Started"}}
    assert result.notifications == [
        {"cmd_id": "e1", "event": "Reply", "data": {"hello": ["world", 1]}},
        {"cmd_id": "e1", "event": "Ended"},
    ]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_hold_unhold_end(daemon: DaemonHarness) -> None:
    callid = await daemon.call()
    client = await daemon.client()

    hold = await client.command("CallHold", {"callid": callid})
    assert hold.events == HOLD
    assert [n.get("data") for n in hold.notifications] == [
        None,
        {"leg": "caller"},
        {"leg": "callee"},
        {"leg": "caller"},
        {"leg": "callee"},
        None,
    ]

    again = await client.command("CallHold", {"callid": callid})
    assert again.events == ["Error", "Ended"]
    assert again.data("Error") == ["480 Both dialog legs are on hold"]

    unhold = await client.command("CallUnhold", {"callid": callid})
    assert unhold.events == UNHOLD
    # callops resumes the callee first (trace f_hold_unhold)
    assert [n.get("data") for n in unhold.notifications] == [
        None,
        {"leg": "callee"},
        {"leg": "caller"},
        {"leg": "callee"},
        {"leg": "caller"},
        None,
    ]

    not_held = await client.command("CallUnhold", {"callid": callid})
    assert not_held.data("Error") == ["480 No dialog legs on hold"]

    end = await client.command("CallEnd", {"callid": callid})
    assert end.events == ["Ended"]
    await until(
        daemon.reactor,
        lambda: daemon.emu.dialogs.get(callid) is None or daemon.emu.dialogs[callid].state == 5,
    )
    end_again = await client.command("CallEnd", {"callid": callid})
    assert end_again.events == ["Error", "Ended"]
    assert end_again.data("Error") == ["404 Requested Dialog not found"]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_hold_unknown_call(daemon: DaemonHarness) -> None:
    client = await daemon.client()
    result = await client.command("CallHold", {"callid": "no-such-call@x"})
    assert result.notifications[0]["event"] == "Error"
    assert result.data("Error") == ["404 Dialog not found"]
    assert result.events == ["Error", "Ended"]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_hold_leg_fails(daemon: DaemonHarness) -> None:
    """
    A leg that refuses the re-INVITE (the click-to-dial caller leg in trace
    f_hold_early_and_click_to_dial): OpenSIPS still answers "OK"; the
    command reports the other leg's success and an Error naming the leg.
    """
    daemon.emu.add_phone("sip:grumpy@127.0.0.1", Phone.baresip(hold_ok=False))
    callid = await daemon.call("grumpy", "bob")
    client = await daemon.client()
    result = await client.command("CallHold", {"callid": callid})
    assert result.events == [
        "CallHolding",
        "CallHoldStart",
        "CallHoldStart",
        "CallHoldSuccessful",
        "Error",
        "Ended",
    ]
    assert result.data("CallHoldSuccessful") == [{"leg": "callee"}]
    assert result.data("Error") == ["hold failed on leg caller"]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_rpc_errors_over_websocket(daemon: DaemonHarness) -> None:
    client = await daemon.client()
    sent = daemon.opensips.mi.stats["sent"]
    bad = await client.command("CallHold", {"callid": "a\r\nVia: evil"})
    assert bad.response["error"]["code"] == -32602
    unknown = await client.command("callhold", {"callid": "x"})
    assert unknown.response["error"] == {"code": -32601, "message": "Method not found", "data": "callhold"}
    client.send_json("{not json")
    await until(daemon.reactor, lambda: len(client.received) == 3)
    assert client.received[-1]["error"]["code"] == -32700
    assert client.received[-1]["id"] is None
    assert daemon.opensips.mi.stats["sent"] == sent  # no MI request left
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_binary_frame_closes_1003(daemon: DaemonHarness) -> None:
    client = await daemon.client()
    client.sendMessage(b"\x00\x01", isBinary=True)
    code, reason = await client.closed
    assert code == 1003
    assert "binary" in reason


@pytest_twisted.ensureDeferred
async def test_oversized_message_closes_1009(reactor: Any) -> None:
    daemon = await start_daemon(reactor, "--max-message-size", "1000")
    try:
        client = await daemon.client()
        client.send_json({"jsonrpc": "2.0", "id": 1, "method": "Echo", "params": {"x": "y" * 2000}})
        code, _ = await client.closed
        assert code == 1009
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_path_refused(daemon: DaemonHarness) -> None:
    with pytest.raises(ConnectionError):
        await connect(daemon.reactor, daemon.port, path="/other")


@pytest_twisted.ensureDeferred
async def test_client_disconnect_mid_command(reactor: Any) -> None:
    """
    The client goes away while its CallHold waits for OpenSIPS: nothing
    crashes, the command is aborted and releases its MI request, event
    registration and timers; the call is not touched (no MI request is
    sent for it).
    """
    silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    daemon = await start_daemon(reactor, "--mi-timeout", "30", mi=f"udp:127.0.0.1:{silent.getHost().port}")
    try:
        client = await daemon.client()
        client.send_json({"jsonrpc": "2.0", "id": 9, "method": "CallHold", "params": {"callid": "abc"}})
        await until(
            reactor, lambda: any(p.method == "call_hold" for p in daemon.opensips.mi.pending.values())
        )
        sent = daemon.opensips.mi.stats["sent"]
        client.transport.abortConnection()  # type: ignore[union-attr]
        await until(reactor, lambda: daemon.runner.running == {})
        assert daemon.opensips.hub.registrations == 0
        assert not any(p.method == "call_hold" for p in daemon.opensips.mi.pending.values())
        assert daemon.opensips.mi.stats["sent"] == sent
        other = await daemon.client()
        assert (await other.command("Echo", {})).events == ["Reply", "Ended"]
        other.sendClose()
    finally:
        await daemon.stop()
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_200_concurrent_holds_from_20_clients(daemon: DaemonHarness) -> None:
    callids = [daemon.emu.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1") for _ in range(200)]
    await until(daemon.reactor, lambda: all(daemon.emu.dialogs[c].state == 4 for c in callids), timeout=20)
    clients = [await daemon.client() for _ in range(20)]
    pending = [clients[i % 20].command("CallHold", {"callid": c}) for i, c in enumerate(callids)]
    results = []
    for d in pending:
        results.append(await d)
    for result in results:
        assert result.events == HOLD, result.notifications
    assert daemon.runner.running == {}
    for client in clients:
        client.sendClose()


@pytest_twisted.ensureDeferred
async def test_mi_timeout_is_an_error_naming_it(reactor: Any) -> None:
    """
    OpenSIPS does not answer: the command ends with an Error that names the
    MI command and the timeout, never hangs.
    """
    silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    daemon = await start_daemon(reactor, "--mi-timeout", "0.2", mi=f"udp:127.0.0.1:{silent.getHost().port}")
    try:
        client = await daemon.client()
        result = await client.command("CallHold", {"callid": "abc"})
        assert result.events == ["Error", "Ended"]
        assert result.data("Error") == ["OpenSIPS did not answer MI call_hold within 0.2 s"]
        client.sendClose()
    finally:
        await daemon.stop()
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_unsubscribes_on_stop(reactor: Any) -> None:
    daemon = await start_daemon(reactor)
    socket = daemon.opensips.event_socket
    await daemon.top.stopService()
    expires = {event: info.expire for (event, s), info in daemon.emu.subscribers.items() if s == socket}
    assert expires == {"E_CALL_TRANSFER": 0, "E_CALL_HOLD": 0, "E_DLG_STATE_CHANGED": 0}
    await daemon.running.stop()


@pytest_twisted.ensureDeferred
async def test_survives_opensips_down_then_up(reactor: Any) -> None:
    """
    OpenSIPS is down (ICMP port unreachable for every MI datagram): commands
    end with an Error naming the MI timeout; once OpenSIPS (here 4.0) is up
    on that address, the same daemon learns its MI names, re-subscribes and
    works again.
    """
    probe = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    port = probe.getHost().port
    await probe.stopListening()
    daemon = await start_daemon(
        reactor, "--mi-timeout", "0.3", "--event-expire", "3", mi=f"udp:127.0.0.1:{port}"
    )
    later = None
    try:
        client = await daemon.client()
        down = await client.command("CallHold", {"callid": "abc"})
        assert down.data("Error") == ["OpenSIPS did not answer MI call_hold within 0.3 s"]
        assert daemon.opensips.names.family == ""  # `which` got no answer
        later = start_emulator(reactor, port=port, delay_scale=0, version="4.0")
        socket = daemon.opensips.event_socket
        # refreshed every min(expire/3, 60) = 1 s
        await until(reactor, lambda: any(s == socket for (_, s) in later.emulator.subscribers))
        # the names are learnt at the first round OpenSIPS answers
        assert daemon.opensips.names.hold == "callops:hold"
        callid = later.emulator.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
        await until(reactor, lambda: later.emulator.dialogs[callid].state == 4)
        up = await client.command("CallHold", {"callid": callid})
        assert up.events == HOLD
        client.sendClose()
    finally:
        await daemon.top.stopService()
        await daemon.running.stop()
        if later is not None:
            await later.stop()


@pytest_twisted.ensureDeferred
async def test_unix_datagram_mi_and_events(reactor: Any, tmp_path: Any) -> None:
    """
    mi_datagram on a unix datagram socket (--mi unix:/path) and events to a
    unix socket (--events unix:/path, event_datagram's other socket form).
    """
    from callapi.emulator import EventSender, MIProtocol, OpenSIPSEmulator

    sender = EventSender()
    event_port = reactor.listenUDP(0, sender, interface="127.0.0.1")
    emu = OpenSIPSEmulator(reactor, sender.send, delay_scale=0)
    emu.add_default_phones()
    mi_path = str(tmp_path / "mi.sock")
    mi_port = reactor.listenUNIXDatagram(mi_path, MIProtocol(emu), maxPacketSize=65535)
    options = Options()
    options.parseOptions(
        [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--mi",
            f"unix:{mi_path}",
            "--events",
            f"unix:{tmp_path / 'events.sock'}",
        ]
    )
    top = makeService(options, reactor)
    top.startService()
    try:
        port = await websocket_port(top)
        opensips = top.getServiceNamed("opensips")
        await opensips.subscribed
        assert opensips.event_socket == f"unix:{tmp_path / 'events.sock'}"
        assert all(s["ok"] for s in opensips.subscriptions.status.values())
        callid = emu.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
        await until(reactor, lambda: emu.dialogs[callid].state == 4)
        client = await connect(reactor, port)
        assert (await client.command("CallHold", {"callid": callid})).events == HOLD
        client.sendClose()
    finally:
        await top.stopService()
        await mi_port.stopListening()
        await event_port.stopListening()
        sender.close_unix()
        emu.stop()
