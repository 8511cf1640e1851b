"""
C{CallHold} / C{CallUnhold}: put both legs of a dialog on hold (or resume
them) with callops' MI C{call_hold} / C{call_unhold} and follow the
E_CALL_HOLD events.

What OpenSIPS does (traces C{f_hold_unhold}, C{f_hold_early_and_click_to_dial};
3.4 README "E_CALL_HOLD"): it sends a re-INVITE to each leg not already in
the wanted state, raising C{start} for each leg from the MI process *before*
its MI reply, then C{ok} or C{fail} per leg as the re-INVITEs are answered,
before or after the MI reply.  The MI reply is C{"OK"} even if a leg later
fails; errors are 404 "Dialog not found", 410 "Dialog not ready",
480 "Both dialog legs are on hold" / "No dialog legs on hold".

The command therefore ends when (1) the MI reply said OK, (2) the set of
started legs is settled (one reactor turn after the MI reply, since the
C{start} datagrams were sent before it; when fewer than both legs started
by then, C{Settings.hold_settle} later, for a remote proxy whose datagrams
reach the two sockets at slightly different times), and (3) every started leg reported
C{ok} or C{fail}, whatever the order in which these arrive.  Notifications
keep the Go Call API order: C{CallHolding} first (on the MI reply), then the
per-leg events in arrival order (those that came before the MI reply are
held back until it).
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from callapi import validation
from callapi.errors import CommandTimeout, MIError, MITimeout
from callapi.opensips.dialog import HoldEvent, HoldState
from callapi.scenarios.base import Command, Context
from callapi.scenarios.machine import Flow, Machine


class HoldPhase(enum.Enum):
    """
    The phases of a CallHold/CallUnhold (a join of the MI reply, the set
    of started legs and each started leg's outcome).
    """

    #: C{call_hold} / C{call_unhold} sent; leg events are held back until
    #: its reply
    WAITING_REPLY = enum.auto()
    #: "OK" came; one reactor turn for the C{start}s sent before it
    SETTLING = enum.auto()
    #: fewer than both legs started: C{Settings.hold_settle} for another
    AWAITING_SECOND_START = enum.auto()
    #: the set of legs is known: waiting for each leg's C{ok}/C{fail}
    WAITING_LEGS = enum.auto()
    DONE = enum.auto()


_P = HoldPhase
_LIVE = (_P.WAITING_REPLY, _P.SETTLING, _P.AWAITING_SECOND_START, _P.WAITING_LEGS)

#: CallHold's transition table (docs/scenarios.md).
HOLD_FLOW = Flow(
    "CallHold / CallUnhold",
    HoldPhase,
    _P.WAITING_REPLY,
    _P.DONE,
    [
        (_P.WAITING_REPLY, "accepted", _P.SETTLING, "_on_accepted"),
        (_P.WAITING_REPLY, "refused", (_P.WAITING_REPLY, _P.SETTLING, _P.DONE), "_on_refused"),
        (_P.WAITING_REPLY, "resend", _P.WAITING_REPLY, "_send"),
        (_P.WAITING_REPLY, "leg_reported", _P.WAITING_REPLY, "_on_leg"),
        (_P.SETTLING, "leg_reported", _P.SETTLING, "_on_leg"),
        (_P.SETTLING, "turn_passed", (_P.AWAITING_SECOND_START, _P.WAITING_LEGS, _P.DONE), "_on_turn_passed"),
        (
            _P.AWAITING_SECOND_START,
            "leg_reported",
            (_P.AWAITING_SECOND_START, _P.WAITING_LEGS),
            "_on_leg_while_settling",
        ),
        (_P.AWAITING_SECOND_START, "settle_waited", (_P.WAITING_LEGS, _P.DONE), "_on_settled"),
        (_P.WAITING_LEGS, "leg_reported", (_P.WAITING_LEGS, _P.DONE), "_on_leg"),
        (_P.WAITING_LEGS, "no_event", (_P.WAITING_LEGS, _P.DONE), "_no_event"),
        (_LIVE, "timed_out", _P.DONE, "_timed_out"),
    ],
    abort="abort_flow",
)


class CallHold(Command):
    """
    Params: C{callid}.  Events: C{CallHolding}, then per leg
    C{CallHoldStart {leg}} and C{CallHoldSuccessful {leg}}, then C{Ended}.
    A 410 "Dialog not ready" (a call answered a moment ago) is retried a
    few times (C{Settings.hold_not_ready_retries}, every
    C{Settings.hold_retry_delay} s) before it becomes the C{Error}.
    A leg that answers C{fail} gives one C{Error} naming it
    (C{"hold failed on leg caller"}) before C{Ended}.  MI errors give
    C{Error} with OpenSIPS' code and text (C{"480 Both dialog legs are on
    hold"}).  Timeouts (C{Settings.hold_timeout} overall,
    C{Settings.hold_event_grace} for the first event) give an C{Error} naming
    the timeout.

    The flow is L{HOLD_FLOW} (phases L{HoldPhase}).
    """

    method = "CallHold"
    action = "hold"
    accepted_event = "CallHolding"
    start_event = "CallHoldStart"
    ok_event = "CallHoldSuccessful"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.machine: Machine[HoldPhase] = Machine(HOLD_FLOW, self)
        #: legs that reported C{start} (in order)
        self._started: dict[str, None] = {}
        #: leg -> C{"ok"} / C{"fail"}
        self._finished: dict[str, str] = {}
        #: (kind, leg) reported before the MI reply
        self._held_back: list[tuple[str, str]] = []
        self._retries = 0
        self._settle_timer: IDelayedCall | None = None

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 when C{callid} is missing or not a Call-ID,
            or an unknown parameter is present.
        """
        return validation.check_params(params, {"callid": validation.callid}, {"leg": validation.leg})

    @staticmethod
    def check_context(params: dict[str, Any], ctx: Context) -> None:
        """
        @raise RPCError: -32602 for C{leg} when the proxy has no per-leg
            hold (3.x rejects any extra MI parameter).
        """
        if "leg" in params and not ctx.names.per_leg_hold:
            raise validation.invalid_params(
                "leg needs per-leg hold (OpenSIPS 4.0 callops); this OpenSIPS does not support it"
            )

    def mi_method(self) -> str:
        """
        @return: the MI command in use (C{call_hold} or C{callops:hold}).
        """
        return self.ctx.names.hold

    def start(self) -> None:
        feed = self.machine.feed
        self.listen_hold(self.params["callid"], self._on_event)
        timeout = self.ctx.settings.hold_timeout
        self.call_later(timeout, feed, "timed_out", timeout)
        self._send()

    def _on_event(self, event: HoldEvent) -> None:
        if event.action == self.action:
            self.machine.feed("leg_reported", event)

    # actions

    def _send(self) -> None:
        params = {"callid": self.params["callid"]}
        if "leg" in self.params:
            params["leg"] = self.params["leg"]
        self.request(
            self.mi_method(),
            params,
            lambda result: self.machine.feed("accepted", result),
            lambda reason: self.machine.feed("refused", reason),
        )

    def _on_refused(self, reason: BaseException) -> HoldPhase:
        """
        410 "Dialog not ready" (the ACK of a just-answered call has not
        reached the proxy, trace f_hold_early_and_click_to_dial) is retried
        C{Settings.hold_not_ready_retries} times; anything else fails.
        """
        if isinstance(reason, MITimeout) and (self._held_back or self._started):
            # the "OK" was lost but E_CALL_HOLD shows the hold happening
            self._log.warn(
                "no {mi_method} reply for {cmd_id}, but its events came",
                mi_method=self.mi_method(),
                cmd_id=self.cmd_id,
            )
            return self._on_accepted("OK")
        settings = self.ctx.settings
        if (
            isinstance(reason, MIError)
            and reason.code == 410
            and self._retries < settings.hold_not_ready_retries
        ):
            self._retries += 1
            self.call_later(settings.hold_retry_delay, self.machine.feed, "resend")
            return HoldPhase.WAITING_REPLY
        self.fail(reason)
        return HoldPhase.DONE

    def _on_accepted(self, result: Any) -> HoldPhase:
        self.emit(self.accepted_event)
        held_back, self._held_back = self._held_back, []
        for kind, leg in held_back:
            self._report(kind, leg)
        self.call_later(0, self.machine.feed, "turn_passed")
        return HoldPhase.SETTLING

    def _on_turn_passed(self) -> HoldPhase:
        if len(self._started) < 2:
            # one leg (or none) started so far: the other may be held
            # already (skipped silently) or its `start` still on the way
            # from a remote proxy; give it a moment before deciding
            self._settle_timer = self.call_later(
                self.ctx.settings.hold_settle, self.machine.feed, "settle_waited"
            )
            return HoldPhase.AWAITING_SECOND_START
        return self._on_settled()

    def _on_settled(self) -> HoldPhase:
        if not self._started:
            grace = self.ctx.settings.hold_event_grace
            self.call_later(grace, self.machine.feed, "no_event", grace)
        return self._check_done()

    def _on_leg_while_settling(self, event: HoldEvent) -> HoldPhase:
        self._on_leg(event)
        if len(self._started) == 2 and event.state is HoldState.START:
            # both legs known: nothing more to wait for
            if self._settle_timer is not None and self._settle_timer.active():
                self._settle_timer.cancel()
            return HoldPhase.WAITING_LEGS
        return HoldPhase.AWAITING_SECOND_START

    def _on_leg(self, event: HoldEvent) -> HoldPhase | None:
        leg = event.leg
        if event.state is HoldState.START:
            if leg in self._started:
                return None  # duplicate
            self._started[leg] = None
            self._queue("start", leg)
        else:
            if leg in self._finished:
                return None  # duplicate (4.0 overlapping holds), or late
            if leg not in self._started:
                # reordered: ok/fail overtook start; report both
                self._started[leg] = None
                self._queue("start", leg)
            kind = event.state.value
            self._finished[leg] = kind
            self._queue(kind, leg)
        if self.machine.phase is HoldPhase.WAITING_LEGS:
            return self._check_done()
        return None

    def _queue(self, kind: str, leg: str) -> None:
        if self.machine.phase is HoldPhase.WAITING_REPLY:
            self._held_back.append((kind, leg))
        else:
            self._report(kind, leg)

    def _report(self, kind: str, leg: str) -> None:
        if kind == "start":
            self.emit(self.start_event, {"leg": leg})
        elif kind == "ok":
            self.emit(self.ok_event, {"leg": leg})

    def _check_done(self) -> HoldPhase:
        if not self._started or any(leg not in self._finished for leg in self._started):
            return HoldPhase.WAITING_LEGS
        failed = [leg for leg, state in self._finished.items() if state == "fail"]
        if failed:
            self.fail(f"{self.action} failed on leg {' and '.join(failed)}")
        else:
            self.end()
        return HoldPhase.DONE

    def _no_event(self, grace: float) -> HoldPhase:
        if self._started:
            return HoldPhase.WAITING_LEGS
        self.fail(
            CommandTimeout(
                f"any E_CALL_HOLD event after OpenSIPS accepted {self.mi_method()} "
                "(is the event subscription working?)",
                grace,
            )
        )
        return HoldPhase.DONE

    def _timed_out(self, timeout: float) -> None:
        waiting = [leg for leg in self._started if leg not in self._finished]
        what = (
            f"E_CALL_HOLD ok/fail for leg {' and '.join(waiting)}"
            if waiting
            else f"the {self.action} to complete"
        )
        self.fail(CommandTimeout(what, timeout))


HOLD_FLOW.check(CallHold)


class CallUnhold(CallHold):
    """
    Params: C{callid}.  Events: C{CallUnholding}, then per leg
    C{CallUnholdStart {leg}} and C{CallUnholdSuccessful {leg}}, C{Ended}.
    Errors as L{CallHold} (C{"480 No dialog legs on hold"}).  OpenSIPS
    resumes the callee first (trace C{f_hold_unhold}).  Same flow.
    """

    method = "CallUnhold"
    action = "unhold"
    accepted_event = "CallUnholding"
    start_event = "CallUnholdStart"
    ok_event = "CallUnholdSuccessful"

    def mi_method(self) -> str:
        return self.ctx.names.unhold
