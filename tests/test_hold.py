"""
C{CallHold} / C{CallUnhold} (L{callapi.scenarios.hold}) run by the scenario
harness (L{callapi.testing.scenario}: a L{FakeMIClient}, the real
L{EventHub}, a L{Clock} and a L{RecordingSink}).

E_CALL_HOLD events are fed in the orders of the real captures
C{f_hold_unhold} and C{f_hold_early_and_click_to_dial} (3.4 README,
"E_CALL_HOLD"), and in the reorderings UDP allows.  Every test checks the
exact notification sequence, that there is exactly one C{Ended} (last), and
that nothing is left behind (event registrations, timers, MI requests).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from zope.interface.verify import verifyObject

from callapi.errors import MIError
from callapi.interfaces import INotificationSink
from callapi.opensips.names import MINames
from callapi.scenarios import COMMANDS, Settings
from callapi.scenarios.hold import CallHold, CallUnhold
from callapi.testing.evi import call_hold
from callapi.testing.fakes import RecordingSink
from callapi.testing.scenario import ENDED, ScenarioHarness

#: f_hold_unhold (proxied baresip call)
PROXIED = "6c93c431e29d3500"
#: f_hold_early_and_click_to_dial (sipp UAS call, then the click-to-dial call)
SIPP = "38bb11d20d700119"
CLICK_TO_DIAL = "bf2ea3e9-e750-4617-9e98-3e9bc32a78b7"

HOLDING = ("CallHolding", None)


def start(leg: str) -> tuple[str, Any]:
    return ("CallHoldStart", {"leg": leg})


def ok(leg: str) -> tuple[str, Any]:
    return ("CallHoldSuccessful", {"leg": leg})


def ustart(leg: str) -> tuple[str, Any]:
    return ("CallUnholdStart", {"leg": leg})


def uok(leg: str) -> tuple[str, Any]:
    return ("CallUnholdSuccessful", {"leg": leg})


def error(text: str) -> tuple[str, Any]:
    return ("Error", text)


@attrs.define
class Env(ScenarioHarness[CallHold]):
    """
    A running CallHold/CallUnhold (L{ScenarioHarness}) fed with scripts.

    @ivar turns: run one reactor turn after each step.
    """

    turns: bool = False

    @property
    def callid(self) -> str:
        return self.command.params["callid"]

    @property
    def action(self) -> str:
        """
        The E_CALL_HOLD C{action} of the command's events.
        """
        return "unhold" if self.command.method == "CallUnhold" else "hold"

    def settle(self) -> None:
        """
        Let C{Settings.hold_settle} pass (fewer than two legs started).
        """
        self.clock.advance(self.ctx.settings.hold_settle)

    def event(self, leg: str, state: str, action: str | None = None, callid: str | None = None) -> None:
        self.dispatch(call_hold(callid or self.callid, leg, action or self.action, state))
        if self.turns:
            self.turn()

    def mi_ok(self) -> None:
        self.mi.reply(0, "OK")
        if self.turns:
            self.turn()

    def mi_error(self, code: int, message: str, data: Any = None) -> None:
        self.mi.error(0, MIError(self.mi.requests[0].method, code, message, data))
        if self.turns:
            self.turn()

    def play_script(self, script: list[str]) -> None:
        """
        Feed C{"MI"} (the MI reply "OK") and C{"<leg> <state>"} events.
        """
        for step in script:
            if step == "MI":
                self.mi_ok()
            else:
                leg, state = step.split()
                self.event(leg, state)


def run(
    cls: type[CallHold] = CallHold,
    callid: str = PROXIED,
    turns: bool = False,
    settings: Settings | None = None,
    names: MINames | None = None,
) -> Env:
    env = Env.start(cls, {"callid": callid}, "h1", settings=settings, names=names)
    env.turns = turns
    return env


TURNS = pytest.mark.parametrize("turns", [False, True], ids=["same-turn", "turn-each"])


def test_sink_is_verified() -> None:
    assert verifyObject(INotificationSink, RecordingSink())


def test_registry() -> None:
    assert COMMANDS["CallHold"] is CallHold and COMMANDS["CallUnhold"] is CallUnhold


# -- the MI request -----------------------------------------------------------


@pytest.mark.parametrize("cls, mi_method", [(CallHold, "call_hold"), (CallUnhold, "call_unhold")])
def test_mi_request(cls: type[CallHold], mi_method: str) -> None:
    env = run(cls)
    assert [tuple(r) for r in env.mi.requests] == [(mi_method, {"callid": PROXIED}, None)]
    assert env.events() == []
    assert env.hub.registrations == 1


@pytest.mark.parametrize("cls, mi_method", [(CallHold, "callops:hold"), (CallUnhold, "callops:unhold")])
def test_mi_request_with_40_names(cls: type[CallHold], mi_method: str) -> None:
    env = run(cls, names=MINames(hold="callops:hold", unhold="callops:unhold"))
    assert [tuple(r) for r in env.mi.requests] == [(mi_method, {"callid": PROXIED}, None)]


# -- trace orders ---------------------------------------------------------------


@TURNS
def test_hold_in_trace_order(turns: bool) -> None:
    # f_hold_unhold: start caller, start callee, ok caller, MI "OK", ok callee
    env = run(turns=turns)
    env.play_script(["caller start", "callee start", "caller ok", "MI", "callee ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_unhold_in_trace_order(turns: bool) -> None:
    # f_hold_unhold: start callee, start caller, MI "OK", ok callee, ok caller
    env = run(CallUnhold, turns=turns)
    env.play_script(["callee start", "caller start", "MI", "callee ok", "caller ok"])
    env.turn()
    assert env.events() == [
        ("CallUnholding", None),
        ustart("callee"),
        ustart("caller"),
        uok("callee"),
        uok("caller"),
        ENDED,
    ]
    env.assert_ended_clean()


@TURNS
def test_hold_sipp_trace_order(turns: bool) -> None:
    # f_hold_early_and_click_to_dial, hold of the sipp call
    env = run(callid=SIPP, turns=turns)
    env.play_script(["caller start", "callee start", "MI", "caller ok", "callee ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_unhold_sipp_trace_order(turns: bool) -> None:
    # f_hold_early_and_click_to_dial: callee start, callee ok, caller start,
    # MI "OK", caller ok (the callee answered before the caller was re-INVITEd)
    env = run(CallUnhold, callid=SIPP, turns=turns)
    env.play_script(["callee start", "callee ok", "caller start", "MI", "caller ok"])
    env.turn()
    assert env.events() == [
        ("CallUnholding", None),
        ustart("callee"),
        uok("callee"),
        ustart("caller"),
        uok("caller"),
        ENDED,
    ]
    env.assert_ended_clean()


@TURNS
def test_all_events_before_the_mi_reply(turns: bool) -> None:
    env = run(turns=turns)
    env.play_script(["caller start", "callee start", "caller ok", "callee ok"])
    assert env.events() == []  # held back until OpenSIPS accepted
    env.mi_ok()
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_mi_reply_before_any_event(turns: bool) -> None:
    env = run(turns=turns)
    env.mi_ok()
    assert env.events() == [HOLDING]
    env.play_script(["caller start", "callee start", "caller ok", "callee ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_ok_before_start(turns: bool) -> None:
    env = run(turns=turns)
    env.play_script(["caller ok", "caller start", "callee start", "MI", "callee ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), ok("caller"), start("callee"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_ok_before_start_after_the_mi_reply(turns: bool) -> None:
    env = run(turns=turns)
    env.play_script(["caller start", "callee start", "MI", "callee ok", "callee start", "caller ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("callee"), ok("caller"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_duplicates_are_ignored(turns: bool) -> None:
    env = run(turns=turns)
    env.play_script(
        [
            "caller start",
            "caller start",
            "callee start",
            "caller ok",
            "caller ok",
            "MI",
            "callee start",
            "caller ok",
            "callee ok",
            "callee ok",
        ]
    )
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_unhold_events_are_ignored_by_hold(turns: bool) -> None:
    env = run(turns=turns)
    env.event("callee", "start", action="unhold")
    env.event("caller", "start")
    env.event("callee", "ok", action="unhold")
    env.event("callee", "start")
    env.mi_ok()
    env.event("caller", "fail", action="unhold")
    env.event("caller", "ok")
    env.event("callee", "ok")
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_hold_events_are_ignored_by_unhold(turns: bool) -> None:
    env = run(CallUnhold, turns=turns)
    env.event("caller", "start", action="hold")
    env.event("caller", "ok", action="hold")
    env.mi_ok()
    env.turn()
    assert env.events() == [("CallUnholding", None)]
    env.play_script(["callee start", "callee ok"])
    env.turn()
    # only one leg started: the command waits Settings.hold_settle for the other
    assert env.events() == [("CallUnholding", None), ustart("callee"), uok("callee")]
    env.settle()
    assert env.events() == [("CallUnholding", None), ustart("callee"), uok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
def test_events_for_another_call_are_ignored(turns: bool) -> None:
    env = run(turns=turns)
    for leg, state in [("caller", "start"), ("callee", "start"), ("caller", "fail"), ("callee", "ok")]:
        env.event(leg, state, callid=CLICK_TO_DIAL)
    env.play_script(["caller start", "callee start", "MI"])
    env.event("caller", "fail", callid=SIPP)
    env.event("callee", "fail", callid=PROXIED + "x")
    env.play_script(["caller ok", "callee ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


@TURNS
@pytest.mark.parametrize(
    "junk",
    [
        {"leg": "both", "state": "start"},
        {"leg": "", "state": "ok"},
        {"leg": "caller", "state": "notify"},
        {"leg": "caller", "state": "failure"},
        {"leg": None, "state": None},
        {},
    ],
)
def test_junk_events_are_ignored(turns: bool, junk: dict[str, Any]) -> None:
    env = run(turns=turns)
    env.play_script(["caller start"])
    env.hub.dispatch("E_CALL_HOLD", {"callid": PROXIED, "action": "hold", **junk})
    env.play_script(["callee start", "MI"])
    env.hub.dispatch("E_CALL_HOLD", {"callid": PROXIED, "action": "hold", **junk})
    env.play_script(["caller ok", "callee ok"])
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]
    env.assert_ended_clean()


# -- failures -------------------------------------------------------------------


@TURNS
def test_leg_fail_click_to_dial_hold(turns: bool) -> None:
    # f_hold_early_and_click_to_dial: the caller leg is OpenSIPS itself (488),
    # MI still answers "OK"
    env = run(callid=CLICK_TO_DIAL, turns=turns)
    env.play_script(["caller start", "callee start", "caller fail", "MI", "callee ok"])
    env.turn()
    assert env.events() == [
        HOLDING,
        start("caller"),
        start("callee"),
        ok("callee"),
        error("hold failed on leg caller"),
        ENDED,
    ]
    env.assert_ended_clean()


@TURNS
def test_leg_fail_click_to_dial_unhold(turns: bool) -> None:
    env = run(CallUnhold, callid=CLICK_TO_DIAL, turns=turns)
    env.play_script(["callee start", "caller start", "MI", "caller fail", "callee ok"])
    env.turn()
    assert env.events() == [
        ("CallUnholding", None),
        ustart("callee"),
        ustart("caller"),
        uok("callee"),
        error("unhold failed on leg caller"),
        ENDED,
    ]
    env.assert_ended_clean()


@TURNS
def test_both_legs_fail(turns: bool) -> None:
    env = run(turns=turns)
    env.play_script(["caller start", "callee start", "MI", "callee fail", "caller fail"])
    env.turn()
    assert env.events() == [
        HOLDING,
        start("caller"),
        start("callee"),
        error("hold failed on leg callee and caller"),
        ENDED,
    ]
    env.assert_ended_clean()


@TURNS
def test_fail_before_start(turns: bool) -> None:
    env = run(turns=turns)
    env.play_script(["callee start", "caller fail", "MI", "callee ok"])
    env.turn()
    assert env.events() == [
        HOLDING,
        start("callee"),
        start("caller"),
        ok("callee"),
        error("hold failed on leg caller"),
        ENDED,
    ]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "cls, code, message, text",
    [
        (CallHold, 404, "Dialog not found", "404 Dialog not found"),
        (CallHold, 480, "Both dialog legs are on hold", "480 Both dialog legs are on hold"),
        (CallUnhold, 480, "No dialog legs on hold", "480 No dialog legs on hold"),
        (CallUnhold, 404, "Dialog not found", "404 Dialog not found"),
        (CallHold, -32602, "Invalid params", "-32602 Invalid params"),
    ],
)
def test_mi_error(cls: type[CallHold], code: int, message: str, text: str) -> None:
    env = run(cls)
    env.mi_error(code, message)
    assert env.events() == [error(text), ENDED]
    env.assert_ended_clean()
    env.play_script(["caller start", "caller ok"])
    env.clock.advance(1000)
    assert env.events() == [error(text), ENDED]


def test_not_ready_is_retried_then_fails() -> None:
    """
    410 "Dialog not ready" (f_hold_early_and_click_to_dial): re-sent every
    hold_retry_delay s, hold_not_ready_retries times, then the Error.
    """
    env = run()
    settings = env.ctx.settings
    not_ready = MIError("call_hold", 410, "Dialog not ready")
    for _attempt in range(settings.hold_not_ready_retries):
        env.mi.error("call_hold", not_ready)
        assert env.events() == []
        env.clock.advance(settings.hold_retry_delay)
    env.mi.error("call_hold", not_ready)
    assert [r.method for r in env.mi.requests] == ["call_hold"] * (settings.hold_not_ready_retries + 1)
    assert env.events() == [error("410 Dialog not ready"), ENDED]
    env.assert_ended_clean()


def test_not_ready_then_ok() -> None:
    env = run()
    env.mi_error(410, "Dialog not ready")
    env.clock.advance(env.ctx.settings.hold_retry_delay)
    assert len(env.mi.requests) == 2
    env.play_script(["caller start", "callee start"])
    env.mi.reply("call_hold", "OK")
    env.turn()
    env.play_script(["caller ok", "callee ok"])
    assert [e[2] for e in env.sink.notifications] == [
        "CallHolding",
        "CallHoldStart",
        "CallHoldStart",
        "CallHoldSuccessful",
        "CallHoldSuccessful",
        "Ended",
    ]
    env.assert_ended_clean()


def test_lost_ok_reply_with_events_is_accepted() -> None:
    env = run()
    env.play_script(["caller start", "callee start", "caller ok", "callee ok"])
    env.mi.time_out("call_hold")
    env.turn()
    assert env.events() == [HOLDING, start("caller"), start("callee"), ok("caller"), ok("callee"), ENDED]


def test_mi_error_with_data() -> None:
    env = run()
    env.mi_error(-32602, "Invalid params", "Too few or too many parameters")
    assert env.events() == [error("-32602 Invalid params (Too few or too many parameters)"), ENDED]
    env.assert_ended_clean()


def test_mi_error_after_events_drops_them() -> None:
    env = run()
    env.play_script(["caller start"])
    env.mi_error(480, "Both dialog legs are on hold")
    assert env.events() == [error("480 Both dialog legs are on hold"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "cls, text",
    [
        (CallHold, "OpenSIPS did not answer MI call_hold within 5 s"),
        (CallUnhold, "OpenSIPS did not answer MI call_unhold within 5 s"),
    ],
)
def test_mi_timeout(cls: type[CallHold], text: str) -> None:
    env = run(cls)
    env.mi.time_out(0)
    assert env.events() == [error(text), ENDED]
    env.assert_ended_clean()


def test_mi_unavailable() -> None:
    from callapi.errors import MIUnavailable

    env = run()
    env.mi.error(0, MIUnavailable("stopped while waiting for call_hold"))
    assert env.events() == [
        error("OpenSIPS MI connection is not available: stopped while waiting for call_hold"),
        ENDED,
    ]
    env.assert_ended_clean()


@pytest.mark.parametrize("grace", [2.0, 0.5, 10.0])
def test_no_event_after_ok(grace: float) -> None:
    env = run(settings=Settings(hold_event_grace=grace))
    env.clock.advance(1)
    env.mi_ok()
    env.turn()
    env.settle()
    env.clock.advance(grace * 0.99)
    assert env.events() == [HOLDING]
    env.clock.advance(grace * 0.01 + 1e-9)  # + float rounding of the sums
    assert env.events() == [
        HOLDING,
        error(
            f"timed out after {grace:g} s waiting for any E_CALL_HOLD event after "
            "OpenSIPS accepted call_hold (is the event subscription working?)"
        ),
        ENDED,
    ]
    env.assert_ended_clean()


def test_no_event_after_ok_unhold() -> None:
    env = run(CallUnhold)
    env.mi_ok()
    env.turn()
    env.settle()
    env.clock.advance(2)
    assert env.events() == [
        ("CallUnholding", None),
        error(
            "timed out after 2 s waiting for any E_CALL_HOLD event after "
            "OpenSIPS accepted call_unhold (is the event subscription working?)"
        ),
        ENDED,
    ]
    env.assert_ended_clean()


def test_a_start_within_the_grace_period_cancels_the_no_event_error() -> None:
    env = run()
    env.mi_ok()
    env.turn()
    env.clock.advance(1.9)
    env.play_script(["caller start"])
    env.clock.advance(10)
    env.play_script(["caller ok"])
    assert env.events() == [HOLDING, start("caller"), ok("caller"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "waiting, script",
    [
        ("callee", ["caller start", "callee start", "caller ok", "MI"]),
        ("caller", ["caller start", "callee start", "MI", "callee ok"]),
        ("caller and callee", ["caller start", "callee start", "MI"]),
    ],
)
def test_a_leg_that_never_finishes(waiting: str, script: list[str]) -> None:
    env = run(settings=Settings(hold_timeout=30.0))
    env.play_script(script)
    env.turn()
    env.clock.advance(29.9)
    assert "Error" not in [e for e, _ in env.events()]
    env.clock.advance(0.1)
    events = env.events()
    assert events[-2:] == [
        error(f"timed out after 30 s waiting for E_CALL_HOLD ok/fail for leg {waiting}"),
        ENDED,
    ]
    env.assert_ended_clean()


def test_default_hold_timeout_is_130_s() -> None:
    env = run()
    env.play_script(["caller start", "callee start", "MI", "caller ok"])
    env.turn()
    env.clock.advance(129.9)
    assert env.events()[-1] == ok("caller")
    env.clock.advance(0.1)
    assert env.events()[-2:] == [
        error("timed out after 130 s waiting for E_CALL_HOLD ok/fail for leg callee"),
        ENDED,
    ]
    env.assert_ended_clean()


def test_nothing_after_ended() -> None:
    env = run()
    env.play_script(["caller start", "callee start", "caller ok", "MI", "callee ok"])
    env.turn()
    done = list(env.events())
    env.play_script(["caller fail", "callee fail", "caller start"])
    env.hub.dispatch(
        "E_CALL_HOLD", {"callid": PROXIED, "leg": "caller", "action": "unhold", "state": "start"}
    )
    env.clock.advance(1000)
    env.command.fail("late failure")
    env.command.end()
    env.command.abort()
    assert env.events() == done
    env.assert_ended_clean()


def test_abort_releases_silently() -> None:
    env = run()
    env.play_script(["caller start", "MI"])
    env.command.abort("client disconnected")
    assert env.events() == [HOLDING, start("caller")]
    assert env.command.state == "aborted: client disconnected"
    env.clock.advance(1000)
    env.play_script(["caller ok", "callee start", "callee ok"])
    assert env.events() == [HOLDING, start("caller")]
    assert env.hub.registrations == 0 and env.clock.getDelayedCalls() == []


def test_abort_cancels_the_mi_request() -> None:
    env = run()
    env.command.abort()
    assert env.mi.requests[0].state == "cancelled"
    assert env.mi.pending == {} and env.hub.registrations == 0
    assert env.clock.getDelayedCalls() == [] and env.events() == []


def test_finished_fires_once_with_the_command() -> None:
    env = run()
    fired: list[Any] = []
    env.command.finished.addCallback(fired.append)
    env.mi_error(404, "Dialog not found")
    assert fired == [env.command]


@pytest.mark.parametrize(
    "params, data",
    [
        ({}, "missing parameter callid"),
        ({"callid": "a b"}, "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ({"callid": PROXIED, "leg": "both"}, 'leg must be "caller" or "callee"'),
        ({"callid": PROXIED, "headers": "X: y\r\n"}, "unknown parameter headers"),
    ],
)
def test_check(params: dict[str, Any], data: str) -> None:
    from callapi.errors import RPCError

    for cls in (CallHold, CallUnhold):
        with pytest.raises(RPCError) as caught:
            cls.check(params)
        assert (caught.value.code, caught.value.data) == (-32602, data)
