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

from typing import Any

from callapi import validation
from callapi.errors import CommandTimeout, MIError, MITimeout
from callapi.scenarios.base import Command


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
    """

    method = "CallHold"
    action = "hold"
    accepted_event = "CallHolding"
    start_event = "CallHoldStart"
    ok_event = "CallHoldSuccessful"

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 when C{callid} is missing or not a Call-ID,
            or an unknown parameter is present.
        """
        return validation.check_params(params, {"callid": validation.callid},
                                       {"leg": validation.leg})

    @staticmethod
    def check_context(params: dict[str, Any], ctx: Any) -> None:
        """
        @raise RPCError: -32602 for C{leg} when the proxy has no per-leg
            hold (3.x rejects any extra MI parameter).
        """
        if "leg" in params and not ctx.names.per_leg_hold:
            raise validation.invalid_params(
                "leg needs per-leg hold (OpenSIPS 4.0 callops); this OpenSIPS does not support it")

    def mi_method(self) -> str:
        """
        @return: the MI command in use (C{call_hold} or C{callops:hold}).
        """
        return self.ctx.names.hold

    def start(self) -> None:
        self.state = "waiting for MI reply"
        callid = self.params["callid"]
        self._accepted = False
        self._settled = False
        self._started: dict[str, None] = {}
        self._finished: dict[str, str] = {}
        self._held_back: list[tuple[str, str]] = []
        self._settle_waited = False
        self.listen("E_CALL_HOLD", callid, self._on_event)
        timeout = self.ctx.settings.hold_timeout
        self.call_later(timeout, self._timed_out, timeout)
        self._retries = 0
        self._send()

    def _send(self) -> None:
        params = {"callid": self.params["callid"]}
        if "leg" in self.params:
            params["leg"] = self.params["leg"]
        self.request(self.mi_method(), params, self._on_accepted, self._on_refused)

    def _on_refused(self, reason: BaseException) -> None:
        """
        410 "Dialog not ready" (the ACK of a just-answered call has not
        reached the proxy, trace f_hold_early_and_click_to_dial) is retried
        C{Settings.hold_not_ready_retries} times; anything else fails.
        """
        if isinstance(reason, MITimeout) and (self._held_back or self._started):
            # the "OK" was lost but E_CALL_HOLD shows the hold happening
            self._log.warn("no {mi_method} reply for {cmd_id}, but its events came",
                           mi_method=self.mi_method(), cmd_id=self.cmd_id)
            self._on_accepted("OK")
            return
        settings = self.ctx.settings
        if (isinstance(reason, MIError) and reason.code == 410
                and self._retries < settings.hold_not_ready_retries):
            self._retries += 1
            self.call_later(settings.hold_retry_delay, self._send)
            return
        self.fail(reason)

    # inputs

    def _on_accepted(self, result: Any) -> None:
        self._accepted = True
        self.state = "waiting for legs"
        self.emit(self.accepted_event)
        held_back, self._held_back = self._held_back, []
        for kind, leg in held_back:
            self._report(kind, leg)
        self.call_later(0, self._settle)

    def _settle(self) -> None:
        if len(self._started) < 2 and not self._settle_waited:
            # one leg (or none) started so far: the other may be held
            # already (skipped silently) or its `start` still on the way
            # from a remote proxy; give it a moment before deciding
            self._settle_waited = True
            self.call_later(self.ctx.settings.hold_settle, self._settle)
            return
        self._settled = True
        if not self._started:
            grace = self.ctx.settings.hold_event_grace
            self.call_later(grace, self._no_event, grace)
        self._check_done()

    def _on_event(self, params: dict[str, Any]) -> None:
        if params.get("action") != self.action:
            return
        leg = params.get("leg")
        state = params.get("state")
        if leg not in validation.LEGS or state not in ("start", "ok", "fail"):
            self._log.warn("ignored E_CALL_HOLD with leg {leg!r} state {state!r} for {callid}",
                           leg=leg, state=state, callid=self.params["callid"])
            return
        if state == "start":
            if leg in self._started:
                return  # duplicate
            self._started[leg] = None
            if len(self._started) == 2 and self._settle_waited:
                self._settled = True  # both legs known: nothing more to wait for
            kind = "start"
        else:
            if leg in self._finished:
                return  # duplicate (4.0 overlapping holds), or late
            if leg not in self._started:
                # reordered: ok/fail overtook start; report both
                self._started[leg] = None
                self._queue("start", leg)
            self._finished[leg] = state
            kind = state
        self._queue(kind, leg)
        self._check_done()

    def _queue(self, kind: str, leg: str) -> None:
        if self._accepted:
            self._report(kind, leg)
        else:
            self._held_back.append((kind, leg))

    def _report(self, kind: str, leg: str) -> None:
        if kind == "start":
            self.emit(self.start_event, {"leg": leg})
        elif kind == "ok":
            self.emit(self.ok_event, {"leg": leg})

    def _check_done(self) -> None:
        if not (self._accepted and self._settled and self._started):
            return
        if any(leg not in self._finished for leg in self._started):
            return
        failed = [leg for leg, state in self._finished.items() if state == "fail"]
        if failed:
            self.fail(f"{self.action} failed on leg {' and '.join(failed)}")
        else:
            self.end()

    def _no_event(self, grace: float) -> None:
        if not self._started:
            self.fail(CommandTimeout(
                f"any E_CALL_HOLD event after OpenSIPS accepted {self.mi_method()} "
                "(is the event subscription working?)", grace))

    def _timed_out(self, timeout: float) -> None:
        waiting = [leg for leg in self._started if leg not in self._finished]
        what = (f"E_CALL_HOLD ok/fail for leg {' and '.join(waiting)}" if waiting
                else f"the {self.action} to complete")
        self.fail(CommandTimeout(what, timeout))


class CallUnhold(CallHold):
    """
    Params: C{callid}.  Events: C{CallUnholding}, then per leg
    C{CallUnholdStart {leg}} and C{CallUnholdSuccessful {leg}}, C{Ended}.
    Errors as L{CallHold} (C{"480 No dialog legs on hold"}).  OpenSIPS
    resumes the callee first (trace C{f_hold_unhold}).
    """

    method = "CallUnhold"
    action = "unhold"
    accepted_event = "CallUnholding"
    start_event = "CallUnholdStart"
    ok_event = "CallUnholdSuccessful"

    def mi_method(self) -> str:
        return self.ctx.names.unhold
