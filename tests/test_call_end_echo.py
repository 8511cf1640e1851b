"""
C{CallEnd} (MI C{dlg_end_dlg}, trace C{g_dlg_end_dlg}) and C{Echo}
(L{callapi.scenarios}), driven directly with L{FakeMIClient},
L{EventHub}, L{Clock} and L{RecordingSink}.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from callapi.errors import MIError, MIUnavailable, RPCError
from callapi.opensips.events import EventHub
from callapi.opensips.names import MINames
from callapi.scenarios import COMMANDS, Context
from callapi.scenarios.base import Command
from callapi.scenarios.call_end import CallEnd
from callapi.scenarios.echo import Echo
from callapi.testing.fakes import FakeMIClient, RecordingSink

CALLID = "6c93c431e29d3500"


class Env:
    def __init__(self, cls: type[Command], params: dict[str, Any],
                 names: MINames | None = None) -> None:
        self.mi, self.hub, self.clock, self.sink = (
            FakeMIClient(), EventHub(), Clock(), RecordingSink())
        ctx = Context(mi=self.mi, events=self.hub, clock=self.clock,
                      names=names or MINames())
        self.command = cls(ctx, "c1", cls.check(params), self.sink)  # type: ignore[attr-defined]
        self.command.run()

    def assert_clean(self) -> None:
        events = [e for _, _, e, _ in self.sink.notifications]
        assert events.count("Ended") == 1 and events[-1] == "Ended"
        assert self.command.done
        assert self.command.outstanding == {"subscriptions": 0, "timers": 0, "requests": 0}
        assert self.mi.pending == {} and self.hub.registrations == 0
        assert self.clock.getDelayedCalls() == []


def test_registry_holds_exactly_the_documented_commands() -> None:
    assert set(COMMANDS) == {"Echo", "CallStart", "CallEnd", "CallHold", "CallUnhold",
                             "CallBlindTransfer", "CallAttendedTransfer"}
    assert (COMMANDS["Echo"], COMMANDS["CallEnd"]) == (Echo, CallEnd)
    assert {name: cls.method for name, cls in COMMANDS.items()} == {
        name: name for name in COMMANDS}


# -- CallEnd --------------------------------------------------------------------


def test_call_end_request() -> None:
    env = Env(CallEnd, {"callid": CALLID})
    assert [tuple(r) for r in env.mi.requests] == [("dlg_end_dlg", {"dialog_id": CALLID}, None)]
    assert env.sink.notifications == []


def test_call_end_with_40_name() -> None:
    env = Env(CallEnd, {"callid": CALLID}, names=MINames(end_dialog="dialog:end_dlg"))
    assert [tuple(r) for r in env.mi.requests] == [
        ("dialog:end_dlg", {"dialog_id": CALLID}, None)]


def test_call_end_ok() -> None:
    env = Env(CallEnd, {"callid": CALLID})
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.sink.notifications == [("CallEnd", "c1", "Ended", None)]
    env.assert_clean()


@pytest.mark.parametrize("reason, text", [
    (MIError("dlg_end_dlg", 404, "Requested Dialog not found"), "404 Requested Dialog not found"),
    (MIError("dlg_end_dlg", -32602, "Invalid params", "Named parameters do not match"),
     "-32602 Invalid params (Named parameters do not match)"),
    (MIUnavailable("stopped while waiting for dlg_end_dlg"),
     "OpenSIPS MI connection is not available: stopped while waiting for dlg_end_dlg"),
])
def test_call_end_error(reason: BaseException, text: str) -> None:
    env = Env(CallEnd, {"callid": CALLID})
    env.mi.error("dlg_end_dlg", reason)
    assert env.sink.notifications == [("CallEnd", "c1", "Error", text),
                                      ("CallEnd", "c1", "Ended", None)]
    env.assert_clean()


def test_call_end_timeout() -> None:
    env = Env(CallEnd, {"callid": CALLID})
    env.mi.time_out("dlg_end_dlg")
    assert env.sink.notifications == [
        ("CallEnd", "c1", "Error", "OpenSIPS did not answer MI dlg_end_dlg within 5 s"),
        ("CallEnd", "c1", "Ended", None)]
    env.assert_clean()


def test_call_end_abort_cancels_the_request() -> None:
    env = Env(CallEnd, {"callid": CALLID})
    env.command.abort()
    assert env.mi.requests[0].state == "cancelled"
    assert env.sink.notifications == []
    assert env.mi.pending == {} and env.clock.getDelayedCalls() == []


@pytest.mark.parametrize("params, data", [
    ({}, "missing parameter callid"),
    ({"dialog_id": CALLID}, "missing parameter callid"),
    ({"callid": CALLID, "extra_hdrs": "X: y\r\n"}, "unknown parameter extra_hdrs"),
    ({"callid": "x\r\nBYE"}, "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
    ({"callid": 42}, "callid must be a non-empty string (a SIP Call-ID)"),
])
def test_call_end_check(params: dict[str, Any], data: str) -> None:
    with pytest.raises(RPCError) as caught:
        CallEnd.check(params)
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        -32602, "Invalid params", data)


# -- Echo -----------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {},
    {"a": 1},
    {"nested": {"list": [1, "two", None, True, 1.5]}, "unicode": "héllo"},
    {"callid": "a b", "leg": "both"},  # nothing is validated
])
def test_echo(params: dict[str, Any]) -> None:
    env = Env(Echo, params)
    assert env.sink.notifications == [("Echo", "c1", "Reply", params),
                                      ("Echo", "c1", "Ended", None)]
    assert env.mi.requests == []
    env.assert_clean()


def test_echo_check_keeps_params() -> None:
    params = {"x": [1, 2], "y": None}
    assert Echo.check(params) == {"x": [1, 2], "y": None}
