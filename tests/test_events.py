"""
L{callapi.opensips.events}: routing EVI events to the commands waiting for them
(L{EventHub}), decoding event datagrams (L{EventReceiverProtocol}) and
keeping OpenSIPS subscribed (L{SubscriptionManager}; 3.4 README, "Events in
general" and "event_subscribe expiry").
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from callapi.errors import MIError
from callapi.interfaces import IEventHub, ISubscription
from callapi.opensips.events import EventHub, EventReceiverProtocol
from callapi.opensips.subscriptions import EVENTS, SubscriptionManager
from callapi.testing.fakes import FakeMIClient, no_result, result_of

CALLID = "6c93c431e29d3500"
OTHER = "bf2ea3e9-e750-4617-9e98-3e9bc32a78b7"
SOCKET = "udp:127.0.0.1:9921"


def hold_params(callid: str = CALLID, leg: str = "caller", state: str = "start") -> dict[str, Any]:
    return {"callid": callid, "leg": leg, "action": "hold", "state": state}


def transfer_params(callid: str, transfer_callid: str, state: str = "start") -> dict[str, Any]:
    return {
        "callid": callid,
        "leg": "callee",
        "transfer_callid": transfer_callid,
        "destination": "sip:cindy@127.0.0.1",
        "state": state,
        "status": "",
    }


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.seen.append(params)


# -- EventHub -------------------------------------------------------------------


def test_hub_and_registration_provide_their_interfaces() -> None:
    hub = EventHub()
    assert verifyObject(IEventHub, hub)
    assert verifyObject(ISubscription, hub.listen("E_CALL_HOLD", CALLID, Recorder()))
    assert verifyObject(ISubscription, hub.listen_transfer(OTHER, Recorder()))


def test_routing_by_event_and_callid() -> None:
    hub = EventHub()
    hold, hold_other, transfer = Recorder(), Recorder(), Recorder()
    hub.listen("E_CALL_HOLD", CALLID, hold)
    hub.listen("E_CALL_HOLD", OTHER, hold_other)
    hub.listen("E_CALL_TRANSFER", CALLID, transfer)
    assert hub.registrations == 3

    event = hold_params()
    hub.dispatch("E_CALL_HOLD", event)
    assert hold.seen == [event] and hold_other.seen == [] and transfer.seen == []
    assert hold.seen[0] is event  # params handed over as they came

    hub.dispatch("E_CALL_HOLD", hold_params(callid="someone-else"))
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": CALLID, "old_state": 3, "new_state": 4})
    hub.dispatch("e_call_hold", hold_params())  # event names are case-sensitive
    hub.dispatch("E_CALL_HOLD", hold_params(callid=CALLID.upper()))
    assert len(hold.seen) == 1 and hold_other.seen == [] and transfer.seen == []
    assert hub.stats == {"received": 5, "delivered": 1, "unrouted": 4}


def test_several_registrations_for_one_call_all_receive() -> None:
    hub = EventHub()
    first, second = Recorder(), Recorder()
    hub.listen("E_CALL_HOLD", CALLID, first)
    hub.listen("E_CALL_HOLD", CALLID, second)
    hub.dispatch("E_CALL_HOLD", hold_params())
    assert len(first.seen) == len(second.seen) == 1


def test_routing_by_transfer_callid() -> None:
    hub = EventHub()
    by_new_call, by_old_call = Recorder(), Recorder()
    hub.listen_transfer("new-call", by_new_call)
    hub.listen("E_CALL_TRANSFER", CALLID, by_old_call)

    event = transfer_params(CALLID, "new-call")
    hub.dispatch("E_CALL_TRANSFER", event)
    assert by_new_call.seen == [event] and by_old_call.seen == [event]

    # another transfer of the same call
    hub.dispatch("E_CALL_TRANSFER", transfer_params(CALLID, "another-new-call"))
    assert len(by_new_call.seen) == 1 and len(by_old_call.seen) == 2

    # transfer_callid only counts for E_CALL_TRANSFER
    hub.dispatch("E_CALL_HOLD", {"callid": "x", "transfer_callid": "new-call"})
    # blind-transfer junk: leg holds the new Call-ID (3.4 README), still routed
    hub.dispatch("E_CALL_TRANSFER", {**transfer_params("x", "new-call"), "leg": "new-call"})
    assert len(by_new_call.seen) == 2 and len(by_old_call.seen) == 2


def test_event_matching_both_ways_reaches_each_registration_once() -> None:
    hub = EventHub()
    by_transfer, by_callid = Recorder(), Recorder()
    hub.listen_transfer("same", by_transfer)
    hub.listen("E_CALL_TRANSFER", "same", by_callid)
    hub.dispatch("E_CALL_TRANSFER", transfer_params("same", "same"))
    assert len(by_transfer.seen) == 1 and len(by_callid.seen) == 1


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"callid": None},
        {"callid": 5},
        {"callid": [CALLID]},
        {"callid": CALLID, "transfer_callid": 7},
    ],
)
def test_odd_params_do_not_crash(params: dict[str, Any]) -> None:
    hub = EventHub()
    seen = Recorder()
    hub.listen("E_CALL_TRANSFER", "5", seen)
    hub.listen_transfer("7", seen)
    hub.dispatch("E_CALL_TRANSFER", params)  # ids are compared as strings only
    assert seen.seen == [] and hub.stats["unrouted"] == 1


def test_cancel_is_idempotent_and_counts_go_back_to_zero() -> None:
    hub = EventHub()
    a, b, c = Recorder(), Recorder(), Recorder()
    reg_a = hub.listen("E_CALL_HOLD", CALLID, a)
    reg_b = hub.listen("E_CALL_HOLD", CALLID, b)
    reg_c = hub.listen_transfer("new-call", c)
    assert hub.registrations == 3

    reg_a.cancel()
    reg_a.cancel()
    assert hub.registrations == 2
    hub.dispatch("E_CALL_HOLD", hold_params())
    assert a.seen == [] and len(b.seen) == 1

    reg_b.cancel()
    reg_c.cancel()
    reg_c.cancel()
    reg_b.cancel()
    assert hub.registrations == 0
    hub.dispatch("E_CALL_HOLD", hold_params())
    hub.dispatch("E_CALL_TRANSFER", transfer_params(CALLID, "new-call"))
    assert a.seen == [] and len(b.seen) == 1 and c.seen == []

    # a stale cancel does not remove a newer registration for the same key
    d = Recorder()
    hub.listen("E_CALL_HOLD", CALLID, d)
    reg_a.cancel()
    reg_b.cancel()
    hub.dispatch("E_CALL_HOLD", hold_params())
    assert len(d.seen) == 1 and hub.registrations == 1


def test_handler_exception_does_not_break_other_handlers() -> None:
    hub = EventHub()
    before, after = Recorder(), Recorder()

    def broken(params: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    hub.listen("E_CALL_HOLD", CALLID, before)
    hub.listen("E_CALL_HOLD", CALLID, broken)
    hub.listen("E_CALL_HOLD", CALLID, after)
    hub.dispatch("E_CALL_HOLD", hold_params())  # does not raise
    hub.dispatch("E_CALL_HOLD", hold_params(state="ok"))
    assert len(before.seen) == len(after.seen) == 2
    assert hub.registrations == 3


def test_handler_may_cancel_itself_and_register_during_dispatch() -> None:
    hub = EventHub()
    seen: list[str] = []
    registrations: list[Any] = []

    def once(params: dict[str, Any]) -> None:
        seen.append("once")
        registrations[0].cancel()
        hub.listen("E_CALL_HOLD", CALLID, lambda p: seen.append("late"))

    registrations.append(hub.listen("E_CALL_HOLD", CALLID, once))
    hub.dispatch("E_CALL_HOLD", hold_params())
    assert seen == ["once"]  # the new registration starts with the next event
    hub.dispatch("E_CALL_HOLD", hold_params())
    assert seen == ["once", "late"] and hub.registrations == 1


def test_cancelled_during_dispatch_receives_nothing_more() -> None:
    hub = EventHub()
    second = Recorder()
    registrations: list[Any] = []

    def first(params: dict[str, Any]) -> None:
        registrations[1].cancel()

    registrations.append(hub.listen("E_CALL_HOLD", CALLID, first))
    registrations.append(hub.listen("E_CALL_HOLD", CALLID, second))
    hub.dispatch("E_CALL_HOLD", hold_params())
    assert second.seen == []


def test_many_calls_route_independently() -> None:
    hub = EventHub()
    recorders = {f"call-{i}": Recorder() for i in range(1000)}
    subscriptions = [hub.listen("E_CALL_HOLD", callid, r) for callid, r in recorders.items()]
    hub.dispatch("E_CALL_HOLD", hold_params(callid="call-500"))
    assert [c for c, r in recorders.items() if r.seen] == ["call-500"]
    for s in subscriptions:
        s.cancel()
    assert hub.registrations == 0


# -- EventReceiverProtocol --------------------------------------------------------

TRACE_EVENT = (
    b'{"jsonrpc": "2.0", "method": "E_CALL_HOLD", "params": {"callid": '
    b'"6c93c431e29d3500", "leg": "caller", "action": "hold", "state": "start"}}'
)


def test_receiver_dispatches_a_trace_datagram() -> None:
    hub = EventHub()
    seen = Recorder()
    hub.listen("E_CALL_HOLD", CALLID, seen)
    receiver = EventReceiverProtocol(hub)
    receiver.datagramReceived(TRACE_EVENT, ("127.0.0.1", 40001))
    dlg = {
        "jsonrpc": "2.0",
        "method": "E_DLG_STATE_CHANGED",
        "params": {
            "id": "cfc.8e0edac7",
            "db_id": "14278563061992",
            "callid": CALLID,
            "from_tag": "058503ef93a22756",
            "to_tag": "231cf8738615b5db",
            "old_state": 3,
            "new_state": 4,
        },
    }
    dlg_seen = Recorder()
    hub.listen("E_DLG_STATE_CHANGED", CALLID, dlg_seen)
    receiver.datagramReceived(json.dumps(dlg).encode(), ("127.0.0.1", 40002))
    assert seen.seen == [hold_params()]
    assert dlg_seen.seen == [dlg["params"]]
    assert receiver.dropped == 0 and hub.stats["received"] == 2


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"400 Parse_error",
        b"[]",
        b"[" + TRACE_EVENT + b"]",
        b'"E_CALL_HOLD"',
        b"null",
        b'{"jsonrpc": "2.0", "method": "E_CALL_HOLD"}',
        b'{"jsonrpc": "2.0", "method": "E_CALL_HOLD", "params": null}',
        b'{"jsonrpc": "2.0", "method": "E_CALL_HOLD", "params": ["6c93c431e29d3500"]}',
        b'{"jsonrpc": "2.0", "method": "E_CALL_HOLD", "params": "{\\"callid\\": \\"x\\"}"}',
        b'{"jsonrpc": "2.0", "params": {"callid": "6c93c431e29d3500"}}',
        b'{"jsonrpc": "2.0", "method": 5, "params": {"callid": "6c93c431e29d3500"}}',
        b"{" * 100_000,
    ],
)
def test_receiver_drops_junk(datagram: bytes) -> None:
    hub = EventHub()
    seen = Recorder()
    hub.listen("E_CALL_HOLD", CALLID, seen)
    receiver = EventReceiverProtocol(hub)
    receiver.datagramReceived(datagram, ("127.0.0.1", 40001))
    assert seen.seen == [] and receiver.dropped == 1 and hub.stats["received"] == 0
    receiver.datagramReceived(TRACE_EVENT, ("127.0.0.1", 40001))  # still works
    assert len(seen.seen) == 1


# -- SubscriptionManager ------------------------------------------------------------


def subscribe_request(
    event: str, expire: int, timeout: Any = None, socket: str = SOCKET
) -> tuple[str, dict[str, Any], Any]:
    return ("event_subscribe", {"event": event, "socket": socket, "expire": expire}, timeout)


def reply_all(mi: FakeMIClient, result: Any = "OK") -> None:
    for index in list(mi.pending):
        mi.reply(index, result)


def test_start_subscribes_to_the_three_events() -> None:
    clock, mi = Clock(), FakeMIClient()
    manager = SubscriptionManager(clock, mi, SOCKET)
    assert EVENTS == ("E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED")
    d = manager.start()
    assert [tuple(r) for r in mi.requests] == [
        subscribe_request("E_CALL_TRANSFER", 120),
        subscribe_request("E_CALL_HOLD", 120),
        subscribe_request("E_DLG_STATE_CHANGED", 120),
    ]
    mi.reply(0)
    mi.reply(1)
    no_result(d)  # fires once every answer came
    assert clock.getDelayedCalls() == []
    mi.reply(2)
    assert result_of(d) is None
    assert {e: s["ok"] for e, s in manager.status.items()} == dict.fromkeys(EVENTS, True)
    [timer] = clock.getDelayedCalls()
    assert timer.getTime() == 40  # default refresh: min(expire / 3, 60)


@pytest.mark.parametrize("expire, refresh", [(120, 40), (3600, 60), (30, 10), (2, 1)])
def test_default_refresh(expire: int, refresh: float) -> None:
    assert SubscriptionManager(Clock(), FakeMIClient(), SOCKET, expire=expire).refresh == refresh


@pytest.mark.parametrize("expire", [0, -1])
def test_expire_must_be_positive(expire: int) -> None:
    with pytest.raises(ValueError):
        SubscriptionManager(Clock(), FakeMIClient(), SOCKET, expire=expire)


def test_refreshes_every_refresh_seconds() -> None:
    clock, mi = Clock(), FakeMIClient()
    manager = SubscriptionManager(
        clock, mi, "unix:/run/callapi-events.sock", expire=60, refresh=15, events=("E_CALL_HOLD",)
    )
    manager.start()
    reply_all(mi)
    clock.advance(14.9)
    assert len(mi.requests) == 1
    clock.advance(0.1)
    assert [tuple(r) for r in mi.requests] == [
        subscribe_request("E_CALL_HOLD", 60, socket="unix:/run/callapi-events.sock")
    ] * 2
    # the next refresh is counted from the answer, and rounds never overlap
    clock.advance(100)
    assert len(mi.requests) == 2 and len(mi.pending) == 1
    reply_all(mi)
    clock.advance(15)
    assert len(mi.requests) == 3


class ScriptedMI(FakeMIClient):
    """
    Answers each request as L{decide} says: C{"ok"} / C{"error"} at once,
    C{"timeout"} after C{timeout} seconds (like the real client), and keeps
    the clock time at which every request was sent.
    """

    def __init__(self, clock: Clock, decide: Callable[[int], str], timeout: float = 5.0) -> None:
        super().__init__(timeout)
        self.clock = clock
        self.decide = decide
        self.sent_at: list[float] = []
        self.outcomes: list[str] = []

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        d = super().call(method, params, timeout)
        index = len(self.requests) - 1
        self.sent_at.append(self.clock.seconds())
        outcome = self.decide(index)
        self.outcomes.append(outcome)
        if outcome == "ok":
            self.reply(index, "OK")
        elif outcome == "error":
            self.error(index, MIError(method, 400, "Bad parameter value"))
        else:
            self.clock.callLater(self.timeout, self.time_out, index)
        return d


def coverage_gaps(mi: ScriptedMI, event: str, until: float, expire: int) -> list[float]:
    """
    Lengths of the periods in [0, until] where OpenSIPS held no live
    subscription for C{event}, counting only successful subscriptions (a
    subscription sent at C{s} delivers until C{s + expire}).
    """
    times = [
        t
        for t, r, o in zip(mi.sent_at, mi.requests, mi.outcomes, strict=False)
        if o == "ok" and r.params and r.params["event"] == event and r.params["expire"] > 0
    ]
    gaps = []
    covered_until = 0.0
    for t in times:
        if t > covered_until:
            gaps.append(t - covered_until)
        covered_until = max(covered_until, t + expire)
    if covered_until < until:
        gaps.append(until - covered_until)
    return gaps


def test_thirty_minutes_without_a_gap() -> None:
    clock = Clock()
    mi = ScriptedMI(clock, lambda i: "ok")
    manager = SubscriptionManager(clock, mi, SOCKET, expire=120)
    manager.start()
    for _ in range(1800):
        clock.advance(1)
    for event in EVENTS:
        assert coverage_gaps(mi, event, 1800, 120) == []
        times = [
            t for t, r in zip(mi.sent_at, mi.requests, strict=False) if (r.params or {})["event"] == event
        ]
        assert times[0] == 0 and max(b - a for a, b in itertools.pairwise(times)) <= 40
        assert len(times) == 1800 // 40 + 1
    assert len(mi.pending) == 0 and len(clock.getDelayedCalls()) == 1


def test_keeps_refreshing_after_failures() -> None:
    clock = Clock()

    # rounds of 3 requests: round 2 gets MI errors, round 4 times out, round 7
    # mixes both; every other round succeeds
    def decide(index: int) -> str:
        round_number, position = divmod(index, 3)
        if round_number == 2:
            return "error"
        if round_number == 4:
            return "timeout"
        if round_number == 7:
            return ("ok", "error", "timeout")[position]
        return "ok"

    mi = ScriptedMI(clock, decide)
    manager = SubscriptionManager(clock, mi, SOCKET, expire=120)
    manager.start()
    statuses = []
    for second in range(1800):
        clock.advance(1)
        if second == 79:  # just after round 2 failed (it is re-tried 1 s later)
            statuses.append(dict(manager.status))
    assert statuses[0]["E_CALL_HOLD"] == {"ok": False, "at": 80.0, "error": "400 Bad parameter value"}
    sent = [
        t for t, r in zip(mi.sent_at, mi.requests, strict=False) if (r.params or {})["event"] == "E_CALL_HOLD"
    ]
    # a failed round is re-tried 1 s later (backoff), not at the next refresh
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert max(gaps) == 40 and 1.0 in gaps  # error: 1 s later
    assert 6.0 in gaps  # timeout (5 s): 1 s after it
    assert sent[-1] >= 1800 - 45
    for event in EVENTS:
        assert coverage_gaps(mi, event, 1800, 120) == []
    assert {e: s["ok"] for e, s in manager.status.items()} == dict.fromkeys(EVENTS, True)


def test_stop_unsubscribes_and_cancels_the_timer() -> None:
    clock, mi = Clock(), FakeMIClient()
    manager = SubscriptionManager(clock, mi, SOCKET)
    manager.start()
    reply_all(mi)
    assert len(clock.getDelayedCalls()) == 1
    d = manager.stop()
    assert clock.getDelayedCalls() == []
    assert [tuple(r) for r in mi.requests[3:]] == [subscribe_request(event, 0, 2.0) for event in EVENTS]
    no_result(d)
    mi.reply(3)
    mi.error(4, MIError("event_subscribe", 400, "Bad parameter value"))
    mi.time_out(5)
    assert result_of(d) is None  # never fails
    clock.advance(3600)
    assert len(mi.requests) == 6 and clock.getDelayedCalls() == []


def test_stop_during_a_round_does_not_reschedule() -> None:
    clock, mi = Clock(), FakeMIClient()
    manager = SubscriptionManager(clock, mi, SOCKET)
    manager.start()
    manager.stop()
    reply_all(mi)  # the first round and the unsubscribes answer
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    assert [(r.params or {})["expire"] for r in mi.requests] == [120, 120, 120, 0, 0, 0]


def test_receiver_drops_events_from_other_sources() -> None:
    """
    Only OpenSIPS' address may send events: a forged E_CALL_TRANSFER from
    another host must not reach the command waiting on that Call-ID.
    """
    from callapi.opensips.events import EventHub, EventReceiverProtocol

    hub = EventHub()
    got: list[dict[str, Any]] = []
    hub.listen("E_CALL_HOLD", "abc", got.append)
    receiver = EventReceiverProtocol(hub, sources={"10.0.0.5"})
    datagram = (
        b'{"jsonrpc":"2.0","method":"E_CALL_HOLD","params":{"callid":"abc",'
        b'"leg":"caller","action":"hold","state":"ok"}}'
    )
    receiver.datagramReceived(datagram, ("10.0.0.66", 40000))
    assert got == [] and receiver.dropped == 1
    receiver.datagramReceived(datagram, ("10.0.0.5", 40001))
    assert len(got) == 1
    receiver.sources = None  # --events-from any
    receiver.datagramReceived(datagram, ("10.0.0.66", 40000))
    assert len(got) == 2
