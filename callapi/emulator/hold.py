"""
The emulator's callops hold: C{call_hold} / C{call_unhold}, the re-INVITEs
they send to each leg and the E_CALL_HOLD events (C{start}, then C{ok} or
C{fail}) that follow, in the 3.4 model (legs marked when the re-INVITE is
sent) and the 4.0 model (per-leg C{leg}/C{headers}, marked on the 2xx).

Traces followed (under C{../shared/opensips-traces}):
C{3.4/f_hold_unhold.jsonl}, C{3.4/f_hold_early_and_click_to_dial.jsonl},
C{4.0/f_hold_per_leg.jsonl}, C{4.0/f_hold_per_leg_click_to_dial.jsonl},
C{4.0/f_hold_early_and_click_to_dial.jsonl}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from callapi.emulator import timings
from callapi.emulator.mi_table import ASYNC, Handler, MIError, Respond, invalid_params, param_str
from callapi.emulator.sip import Dialog, Leg

if TYPE_CHECKING:
    from callapi.emulator.core import OpenSIPSEmulator


class Hold:
    """
    C{call_hold} and C{call_unhold}.

    @param emu: the emulator whose dialogs, scheduler and events it uses.
    """

    def __init__(self, emu: OpenSIPSEmulator) -> None:
        self._emu = emu

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {
            "callops:hold": lambda p, r: self._cmd_hold(p, r, "hold"),
            "callops:unhold": lambda p, r: self._cmd_hold(p, r, "unhold"),
        }

    def _cmd_hold(self, params: dict[str, Any], respond: Respond, action: str) -> Any:
        """
        C{call_hold} / C{call_unhold} (callops) with E_CALL_HOLD events.

        3.4 (3.4/f_hold_unhold.jsonl, 3.4/f_hold_early_and_click_to_dial.jsonl):
        hold re-INVITEs every leg not yet marked (caller first), marking it
        when the re-INVITE is sent; unhold re-INVITEs the marked legs (callee
        first).  Events: C{start} per leg, the MI reply "OK" after the starts,
        then C{ok} or C{fail} per leg (a leg that answers 488, like OpenSIPS'
        own click-to-dial caller leg, gets C{fail}; the reply is still "OK").
        Errors: 404 "Dialog not found", 410 "Dialog not ready" (early),
        480 "Both dialog legs are on hold" / "No dialog legs on hold".

        4.0 (4.0/f_hold_per_leg.jsonl, 4.0/f_hold_per_leg_click_to_dial.jsonl,
        4.0/f_hold_early_and_click_to_dial.jsonl): optional C{leg}
        (caller|callee|both, else 420 "Bad leg") and C{headers}.  Each SIP leg
        remembers which legs' hold its last *accepted* re-INVITE expressed
        (marked on the 2xx, not when sent): hold re-INVITEs the legs whose
        state changes (480 if none), unhold re-INVITEs the legs with any hold
        (480 if none) and clears only the requested leg.  Overlapping holds
        both run, and the UAs' retransmitted 200s raise extra C{ok} events.
        """
        emu = self._emu
        callid = param_str(params, "callid") or ""
        requested = {"caller", "callee"}
        headers: dict[str, str] = {}
        if "leg" in params:
            try:
                leg_value = param_str(params, "leg")
            except MIError:
                raise MIError(420, "Bad leg")
            if leg_value not in ("caller", "callee", "both"):
                raise MIError(420, "Bad leg")
            if leg_value != "both":
                requested = {leg_value}
        if "headers" in params:
            raw = params["headers"]
            if isinstance(raw, str):
                headers = {"caller": raw, "callee": raw}
            elif (
                isinstance(raw, list)
                and len(raw) == 2
                and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in raw)
            ):
                headers = {"caller": str(raw[0]), "callee": str(raw[1])}
            else:
                raise invalid_params("Bad type for parameter 'headers'")
            headers = {k: v.replace("\\r\\n", "\r\n") for k, v in headers.items()}
        dlg = emu.dialogs.get(callid)
        if dlg is None or not dlg.active:
            raise MIError(404, "Dialog not found")
        if dlg.state < 3:
            raise MIError(410, "Dialog not ready")
        mark_on_send = emu.version != "4.0"
        targets: list[tuple[Leg, frozenset[str]]] = []
        if action == "hold":
            for leg in (dlg.caller, dlg.callee):
                if mark_on_send:
                    if not leg.hold:
                        targets.append((leg, frozenset(requested)))
                else:
                    new = leg.hold | requested
                    if new != leg.hold:
                        targets.append((leg, frozenset(new)))
            if not targets:
                raise MIError(480, "Both dialog legs are on hold")
        else:
            if not (dlg.caller.hold or dlg.callee.hold):
                raise MIError(480, "No dialog legs on hold")
            for leg in (dlg.callee, dlg.caller):
                if leg.hold:
                    new = frozenset() if mark_on_send else leg.hold - requested
                    targets.append((leg, frozenset(new)))
        starts = timings.HOLD_START_MS if action == "hold" else timings.UNHOLD_START_MS
        reply_ms = timings.HOLD_REPLY_MS if action == "hold" else timings.UNHOLD_REPLY_MS
        steps: list[tuple[float, Callable[[], None]]] = []
        for index, (leg, new_state) in enumerate(targets):
            start_ms = starts[index]
            if mark_on_send:
                leg.hold = new_state
            outcome, answer_ms = self._reinvite_outcome(leg, headers.get(leg.role, ""), action)
            if leg.role == "caller":
                dlg.callee.cseq += 1
            else:
                dlg.caller.cseq += 1
            if not mark_on_send and leg.reinvites_pending > 0:
                self._retransmitted_oks(dlg, leg, action)
            leg.reinvites_pending += 1
            steps.append((start_ms, self._hold_event(dlg, leg.role, action, "start")))
            steps.append(
                (
                    start_ms + answer_ms,
                    self._hold_done(dlg, leg, action, outcome, new_state, mark=not mark_on_send),
                )
            )
        last_start = starts[len(targets) - 1]
        steps.append((max(reply_ms, last_start + 0.2), lambda: respond.result("OK")))
        emu._sched.chain(f"{action} {callid}", steps)
        return ASYNC

    def _reinvite_outcome(self, leg: Leg, headers: str, action: str) -> tuple[str, float]:
        """How the leg answers the re-INVITE: (C{"ok"}/C{"fail"}, answer ms).
        Malformed C{headers}: 4.0/f_hold_per_leg.jsonl (no answer, tm timeout)."""
        if leg.is_local or leg.phone is None:
            return "fail", timings.LOCAL_REINVITE_MS
        if headers and not headers.endswith("\r\n"):
            return "fail", timings.MALFORMED_REINVITE_MS
        answer = leg.phone.timing["reinvite"] if action == "hold" else timings.UNHOLD_ANSWER_MS
        if not leg.alive or not leg.phone.hold_ok:
            return "fail", answer
        return "ok", answer

    def _raise(self, dlg: Dialog, role: str, action: str, state: str) -> None:
        self._emu._evi.raise_event(
            "E_CALL_HOLD", {"callid": dlg.callid, "leg": role, "action": action, "state": state}
        )

    def _hold_event(self, dlg: Dialog, role: str, action: str, state: str) -> Callable[[], None]:
        def step() -> None:
            self._raise(dlg, role, action, state)

        return step

    def _hold_done(
        self, dlg: Dialog, leg: Leg, action: str, outcome: str, new_state: frozenset[str], mark: bool
    ) -> Callable[[], None]:
        def step() -> None:
            leg.reinvites_pending = max(0, leg.reinvites_pending - 1)
            if not dlg.active:
                return
            if outcome == "ok" and mark:
                leg.hold = new_state
            self._raise(dlg, leg.role, action, outcome)

        return step

    def _retransmitted_oks(self, dlg: Dialog, leg: Leg, action: str) -> None:
        """4.0/f_hold_per_leg.jsonl ids 28/29: the first re-INVITE's 200 is
        ACKed with the second's CSeq, the UA retransmits it and each
        retransmission raises another C{ok}."""
        self._emu._sched.chain(
            f"retransmit {dlg.callid} {leg.role}",
            [
                (timings.HOLD_START_MS[1] + offset, self._hold_event(dlg, leg.role, action, "ok"))
                for offset in timings.RETRANSMIT_OK_MS
            ],
        )
