"""
Issue 7, the command side: CallEnd resolves the Call-ID and tells the
owning command, cleanups finish (L{callapi.opensips.hangup}), commands
fail fast while OpenSIPS is unreachable, C{calls} in Error notifications,
C{caller == callee} refused.  Scenario harness with
L{FakeDialogRegistry} / L{FakeProxyStatus}.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface.verify import verifyObject

from callapi.errors import MIError, RPCError
from callapi.interfaces import IDialogOwner, IDialogRegistry, IProxyStatus
from callapi.opensips.dialog import DialogState
from callapi.opensips.events import EventHub
from callapi.opensips.hangup import Hangups
from callapi.opensips.names import MINames
from callapi.rpc import CommandRunner
from callapi.scenarios import Context
from callapi.scenarios.call_end import CallEnd
from callapi.scenarios.call_start import CallStart
from callapi.scenarios.standalone import AlwaysReachable, NullDialogRegistry
from callapi.testing.fakes import FakeDialogRegistry, FakeMIClient, FakeProxyStatus, result_of
from callapi.testing.scenario import ScenarioHarness

CALLID = "6c93c431e29d3500"


def test_stand_ins_provide_their_interfaces() -> None:
    assert verifyObject(IDialogRegistry, NullDialogRegistry())
    assert verifyObject(IProxyStatus, AlwaysReachable())


# -- CallEnd ----------------------------------------------------------------------


def test_call_end_resolves_the_callid_to_the_internal_id() -> None:
    registry = FakeDialogRegistry()
    registry.add(CALLID, DialogState.CONFIRMED, dialog_id="1a2.3b4")
    env = ScenarioHarness.start(CallEnd, {"callid": CALLID}, registry=registry)
    assert registry.resolves == [CALLID]
    assert env.requests() == [("dlg_end_dlg", {"dialog_id": "1a2.3b4"})]
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [("Ended", None)]
    env.assert_ended_clean()


def test_call_end_of_an_internal_id_is_404_without_mi() -> None:
    # "1a2.3b4" is some dialog's internal ID, but no live dialog's Call-ID
    registry = FakeDialogRegistry()
    registry.add(CALLID, DialogState.CONFIRMED, dialog_id="1a2.3b4")
    env = ScenarioHarness.start(CallEnd, {"callid": "1a2.3b4"}, registry=registry)
    assert env.requests() == []
    assert env.events() == [("Error", "404 Requested Dialog not found"), ("Ended", None)]
    assert env.sink.extras == []
    env.assert_ended_clean()


def test_call_end_404_contradicted_by_the_check_is_retried() -> None:
    registry = FakeDialogRegistry()
    registry.add(CALLID, DialogState.CONFIRMED, dialog_id="1.1")
    env = ScenarioHarness.start(CallEnd, {"callid": CALLID}, registry=registry)
    env.mi.error("dlg_end_dlg", MIError("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert registry.checks == [CALLID]
    env.clock.advance(0.5)
    registry.set_state(CALLID, DialogState.DELETED)
    env.mi.error("dlg_end_dlg", MIError("dlg_end_dlg", 404, "Requested Dialog not found"))
    # the second 404: resolve said live, dlg_end_dlg 404, check: gone
    assert env.events() == [("Error", "404 Requested Dialog not found"), ("Ended", None)]
    env.assert_ended_clean()


def test_call_end_tells_the_owner_at_once() -> None:
    registry = FakeDialogRegistry()
    told: list[tuple[str, str]] = []

    class Owner:
        method, cmd_id = "CallStart", "s1"

        def call_ended_by_api(self, callid: str, by_cmd_id: str) -> None:
            told.append((callid, by_cmd_id))

    owner = Owner()
    registry.claim(CALLID, owner)  # type: ignore[arg-type]
    env = ScenarioHarness.start(CallEnd, {"callid": CALLID}, "e1", registry=registry)
    assert told == [(CALLID, "e1")]
    # the owner's INVITE has no dialog yet: OpenSIPS has none, the owner ends it
    assert env.requests() == []
    assert env.events() == [("Ended", None)]
    env.assert_ended_clean()


def test_two_cleanups_of_one_callid_share_the_attempts() -> None:
    mi, clock = FakeMIClient(), Clock()
    hangups = Hangups(mi, NullDialogRegistry(), MINames(), clock)
    first, second = hangups.end(CALLID, "a"), hangups.end(CALLID, "b")
    assert len(mi.requests) == 1 and list(hangups.pending) == [CALLID]
    mi.reply("dlg_end_dlg", "OK")
    assert result_of(first) == result_of(second)
    assert result_of(first).result == "ended"
    assert hangups.pending == {}


def test_a_lost_dlg_end_dlg_is_retried_with_backoff_and_logged() -> None:
    """Each failed attempt is a warn line naming the Call-ID, the error and the delay."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        mi, clock = FakeMIClient(), Clock()
        hangups = Hangups(mi, NullDialogRegistry(), MINames(), clock)
        done = hangups.end(CALLID, "CallEnd e1")
        mi.time_out("dlg_end_dlg")
        clock.advance(0.5)
        mi.time_out("dlg_end_dlg")
        clock.advance(1.0)
        mi.reply("dlg_end_dlg", "OK")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert result_of(done).result == "ended" and len(mi.requests) == 3 and hangups.pending == {}
    retries = [e for e in events if "retrying in" in e.get("log_format", "")]
    assert [(e["callid"], e["attempts"], e["delay"], e["log_level"]) for e in retries] == [
        (CALLID, 1, 0.5, LogLevel.warn),
        (CALLID, 2, 1.0, LogLevel.warn),
    ]


def test_non_retryable_mi_error_fails_at_once() -> None:
    mi, clock = FakeMIClient(), Clock()
    d = Hangups(mi, NullDialogRegistry(), MINames(), clock).end(CALLID)
    mi.error("dlg_end_dlg", MIError("dlg_end_dlg", -32602, "Invalid params"))
    outcome = result_of(d)
    assert (outcome.result, outcome.attempts, outcome.detail) == ("failed", 1, "-32602 Invalid params")


def test_a_command_is_a_dialog_owner() -> None:
    env = ScenarioHarness.start(CallEnd, {"callid": CALLID})
    assert verifyObject(IDialogOwner, env.command)


# -- fail fast ----------------------------------------------------------------------


def _runner(status: Any) -> tuple[FakeMIClient, list[Any], Any]:
    mi = FakeMIClient()
    ctx = Context(mi=mi, events=EventHub(), clock=Clock(), status=status)
    out: list[Any] = []
    session = CommandRunner(ctx).open(lambda text: out.append(json.loads(text)))
    return mi, out, session


def test_commands_fail_fast_while_opensips_is_unreachable() -> None:
    status = FakeProxyStatus()
    status.now = 42.0
    status.go_down(at=30.0)
    mi, out, session = _runner(status)
    session.received(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "CallEnd", "params": {"callid": CALLID}})
    )
    assert out == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {
                "code": -32010,
                "message": "OpenSIPS unreachable",
                "data": "OpenSIPS unreachable since 30 s (no MI reply for 12 s)",
            },
        }
    ]
    assert mi.requests == []
    session.received(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "Echo", "params": {"cmd_id": "e"}}))
    assert out[1]["result"] == {"cmd_id": "e", "event": "Started"}
    status.come_up()
    session.received(
        json.dumps({"jsonrpc": "2.0", "id": 3, "method": "CallEnd", "params": {"callid": CALLID}})
    )
    assert out[-1]["result"]["event"] == "Started"
    assert [r.method for r in mi.requests] == ["dlg_end_dlg"]


def test_error_notifications_carry_calls_on_the_wire() -> None:
    mi, out, session = _runner(AlwaysReachable())
    session.received(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "CallEnd", "params": {"callid": CALLID}})
    )
    clock = session._runner.ctx.clock
    for _ in range(20):
        if mi.pending:
            mi.error("dlg_end_dlg", MIError("dlg_end_dlg", 500, "Internal error"))
        clock.advance(4.0)
    error = next(m for m in out if m.get("params", {}).get("event") == "Error")
    assert error["params"]["calls"] == [{"callid": CALLID, "state": "unknown"}]
    assert error["params"]["data"].startswith(f"could not end call {CALLID}: 500 Internal error (gave up")


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "caller, callee",
    [
        ("sip:alice@example.com", "sip:alice@example.com"),
        ("sip:alice@Example.COM", "SIP:alice@example.com:5060"),
        ("sip:alice@example.com;transport=udp", "sip:alice@example.com"),
        ("sips:alice@[::1]", "sips:alice@[::1]:5061"),
    ],
)
def test_caller_equal_to_callee_is_refused(caller: str, callee: str) -> None:
    with pytest.raises(RPCError) as caught:
        CallStart.check({"caller": caller, "callee": callee})
    assert (caught.value.code, caught.value.data) == (
        -32602,
        "caller and callee must be different addresses (the phone would be called to itself)",
    )


@pytest.mark.parametrize(
    "caller, callee",
    [
        ("sip:alice@example.com", "sip:Alice@example.com"),
        ("sip:alice@example.com", "sip:alice@example.com:5070"),
        ("sip:alice@example.com", "sips:alice@example.com"),
    ],
)
def test_different_addresses_are_accepted(caller: str, callee: str) -> None:
    assert CallStart.check({"caller": caller, "callee": callee})["callee"] == callee
