"""
C{CallEnd} (MI C{dlg_end_dlg}, trace C{g_dlg_end_dlg}) and C{Echo}
(L{callapi.scenarios}), run by the scenario harness
(L{callapi.testing.scenario}: L{FakeMIClient}, L{EventHub}, L{Clock} and
L{RecordingSink}).
"""

from __future__ import annotations

from typing import Any

import pytest

from callapi.errors import MIError, MIUnavailable, RPCError
from callapi.opensips.names import MINames
from callapi.scenarios import COMMANDS, Command
from callapi.scenarios.call_end import CallEnd
from callapi.scenarios.echo import Echo
from callapi.testing.scenario import ScenarioHarness

CALLID = "6c93c431e29d3500"


def run(cls: type[Command], params: dict[str, Any], names: MINames | None = None) -> ScenarioHarness[Command]:
    """
    Run command C{cls} with C{params} (cmd_id C{"c1"}).
    """
    return ScenarioHarness.start(cls, params, "c1", names=names)


def test_registry_holds_exactly_the_documented_commands() -> None:
    assert set(COMMANDS) == {
        "Echo",
        "CallStart",
        "CallEnd",
        "CallHold",
        "CallUnhold",
        "CallBlindTransfer",
        "CallAttendedTransfer",
    }
    assert (COMMANDS["Echo"], COMMANDS["CallEnd"]) == (Echo, CallEnd)
    assert {name: cls.method for name, cls in COMMANDS.items()} == {name: name for name in COMMANDS}


# -- CallEnd --------------------------------------------------------------------


def test_call_end_request() -> None:
    env = run(CallEnd, {"callid": CALLID})
    assert [tuple(r) for r in env.mi.requests] == [("dlg_end_dlg", {"dialog_id": CALLID}, None)]
    assert env.sink.notifications == []


def test_call_end_with_40_name() -> None:
    env = run(CallEnd, {"callid": CALLID}, names=MINames(end_dialog="dialog:end_dlg"))
    assert [tuple(r) for r in env.mi.requests] == [("dialog:end_dlg", {"dialog_id": CALLID}, None)]


def test_call_end_ok() -> None:
    env = run(CallEnd, {"callid": CALLID})
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.sink.notifications == [("CallEnd", "c1", "Ended", None)]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "reason, text",
    [
        (MIError("dlg_end_dlg", 404, "Requested Dialog not found"), "404 Requested Dialog not found"),
        (
            MIError("dlg_end_dlg", -32602, "Invalid params", "Named parameters do not match"),
            "-32602 Invalid params (Named parameters do not match)",
        ),
        (
            MIUnavailable("stopped while waiting for dlg_end_dlg"),
            "OpenSIPS MI connection is not available: stopped while waiting for dlg_end_dlg",
        ),
    ],
)
def test_call_end_error(reason: BaseException, text: str) -> None:
    env = run(CallEnd, {"callid": CALLID})
    env.mi.error("dlg_end_dlg", reason)
    assert env.sink.notifications == [("CallEnd", "c1", "Error", text), ("CallEnd", "c1", "Ended", None)]
    env.assert_ended_clean()


def test_call_end_timeout_is_retried_until_ok() -> None:
    # behaviour change (issue 7): a lost dlg_end_dlg is retried with backoff
    env = run(CallEnd, {"callid": CALLID})
    env.mi.time_out("dlg_end_dlg")
    assert env.sink.notifications == []
    env.clock.advance(0.5)
    env.mi.time_out("dlg_end_dlg")
    env.clock.advance(1.0)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.requests() == [("dlg_end_dlg", {"dialog_id": CALLID})] * 3
    assert env.sink.notifications == [("CallEnd", "c1", "Ended", None)]
    env.assert_ended_clean()


def test_call_end_gives_up_after_the_deadline() -> None:
    env = run(CallEnd, {"callid": CALLID})
    delays = []
    while env.mi.pending:
        env.mi.time_out("dlg_end_dlg")
        if env.clock.getDelayedCalls():
            delay = env.clock.getDelayedCalls()[0].getTime() - env.clock.seconds()
            delays.append(delay)
            env.clock.advance(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert env.events() == [
        (
            "Error",
            f"could not end call {CALLID}: OpenSIPS did not answer MI dlg_end_dlg within 5 s "
            "(gave up after 10 attempt(s) in 27.5 s)",
        ),
        ("Ended", None),
    ]
    assert env.sink.extras == [("Error", {"calls": [{"callid": CALLID, "state": "unknown"}]})]
    env.assert_ended_clean()


def test_call_end_abort_lets_the_cleanup_finish() -> None:
    # behaviour change (issue 7): the client leaving does not stop the hang-up
    env = run(CallEnd, {"callid": CALLID})
    env.command.abort()
    assert env.mi.requests[0].state == "pending"
    assert list(env.ctx.hangups.pending) == [CALLID]
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.sink.notifications == []
    assert env.ctx.hangups.pending == {}
    assert env.mi.pending == {} and env.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "params, data",
    [
        ({}, "missing parameter callid"),
        ({"dialog_id": CALLID}, "missing parameter callid"),
        ({"callid": CALLID, "extra_hdrs": "X: y\r\n"}, "unknown parameter extra_hdrs"),
        ({"callid": "x\r\nBYE"}, "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ({"callid": 42}, "callid must be a non-empty string (a SIP Call-ID)"),
    ],
)
def test_call_end_check(params: dict[str, Any], data: str) -> None:
    with pytest.raises(RPCError) as caught:
        CallEnd.check(params)
    assert (caught.value.code, caught.value.message, caught.value.data) == (-32602, "Invalid params", data)


# -- Echo -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"a": 1},
        {"nested": {"list": [1, "two", None, True, 1.5]}, "unicode": "héllo"},
        {"callid": "a b", "leg": "both"},  # nothing is validated
    ],
)
def test_echo(params: dict[str, Any]) -> None:
    env = run(Echo, params)
    assert env.sink.notifications == [("Echo", "c1", "Reply", params), ("Echo", "c1", "Ended", None)]
    assert env.mi.requests == []
    env.assert_ended_clean()


def test_echo_check_keeps_params() -> None:
    params = {"x": [1, 2], "y": None}
    assert Echo.check(params) == {"x": [1, 2], "y": None}
