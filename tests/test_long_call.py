"""
A 30-minute call, simulated with a Clock: the daemon's MI client, event hub
and subscription manager wired in memory to the emulator (which enforces
OpenSIPS' silent subscription expiry, trace h_subscription_expiry).  After
30 minutes a CallHold still gets every E_CALL_HOLD event because the
subscriptions were refreshed; without refreshes the same hold would hear
nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from callapi.emulator import OpenSIPSEmulator
from callapi.opensips.events import EventHub, EventReceiverProtocol
from callapi.opensips.mi import MIClientProtocol
from callapi.opensips.subscriptions import SubscriptionManager
from callapi.scenarios import Context
from callapi.scenarios.hold import CallHold
from callapi.testing.fakes import RecordingSink

EVENT_SOCKET = "udp:127.0.0.1:9921"
MI_ADDRESS = ("127.0.0.1", 8080)


class _MemoryTransport:
    """
    Delivers the MI client's datagrams to the emulator and its replies back.
    """

    def __init__(self, emulator: OpenSIPSEmulator, client: MIClientProtocol) -> None:
        self._emulator = emulator
        self._client = client

    def write(self, data: bytes, addr: Any = None) -> None:
        self._emulator.handle_datagram(data, lambda reply: self._client.datagramReceived(reply, MI_ADDRESS))


def wire(clock: Clock, expire: int, refresh: float) -> tuple[OpenSIPSEmulator, Context, Any]:
    hub = EventHub()
    receiver = EventReceiverProtocol(hub)
    emulator = OpenSIPSEmulator(
        clock, lambda socket, data: receiver.datagramReceived(data, ("127.0.0.1", 5060)), delay_scale=0
    )
    emulator.add_default_phones()
    mi = MIClientProtocol(clock, MI_ADDRESS, timeout=5)
    mi.makeConnection(_MemoryTransport(emulator, mi))  # type: ignore[arg-type]
    subscriptions = SubscriptionManager(clock, mi, EVENT_SOCKET, expire=expire, refresh=refresh)
    subscriptions.start()
    return emulator, Context(mi=mi, events=hub, clock=clock), subscriptions


def pump(clock: Clock) -> None:
    """
    Run everything due now (the emulator chains its steps one call at a time).
    """
    for _ in range(200):
        if not any(c.getTime() <= clock.seconds() for c in clock.getDelayedCalls()):
            return
        clock.advance(0)


def hold_after(minutes: int, expire: int, refresh: float) -> list[tuple[str, Any]]:
    """
    Set a call up, let C{minutes} pass, then CallHold it.

    @return: the command's notifications as C{(event, data)}.
    """
    clock = Clock()
    clock.advance(1_800_000_000)  # the emulator's subscription times are wall-clock-like
    emulator, ctx, subscriptions = wire(clock, expire, refresh)
    pump(clock)
    callid = emulator.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
    pump(clock)
    for _ in range(minutes * 6):
        clock.advance(10)
        pump(clock)
    sink = RecordingSink()
    command = CallHold(ctx, "long-1", {"callid": callid}, sink)
    command.run()
    pump(clock)
    clock.advance(ctx.settings.hold_settle)
    pump(clock)
    clock.advance(ctx.settings.hold_event_grace + 1)
    pump(clock)
    subscriptions.stop()
    pump(clock)
    emulator.stop()
    return [(event, data) for _, _, event, data in sink.notifications]


def test_thirty_minute_call_keeps_receiving_events() -> None:
    assert [event for event, _ in hold_after(30, expire=120, refresh=40)] == [
        "CallHolding",
        "CallHoldStart",
        "CallHoldStart",
        "CallHoldSuccessful",
        "CallHoldSuccessful",
        "Ended",
    ]


def test_without_refresh_the_subscription_expires_silently() -> None:
    """
    The control experiment: refreshing only every hour with expire 120 s,
    OpenSIPS stops delivering (as the Go Call API experiences); the command
    then reports that no event came instead of hanging.
    """
    notifications = hold_after(30, expire=120, refresh=3600)
    assert [event for event, _ in notifications] == ["CallHolding", "Error", "Ended"]
    assert notifications[1][1] == (
        "timed out after 2 s waiting for any E_CALL_HOLD event after OpenSIPS accepted "
        "call_hold (is the event subscription working?)"
    )
