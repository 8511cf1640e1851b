"""
C{CallStart}: click-to-dial.  OpenSIPS calls the caller (MI C{t_uac_dlg}
INVITE, tm module); once the caller answered, callops transfers that leg to
the callee (C{call_transfer leg=callee}, a REFER to the caller's phone, RFC
3515), and the first dialog is ended through the proxy (C{dlg_end_dlg})
if it is still up.

Traces: C{a_click_to_dial_success*} (the flow), C{b_click_to_dial_*}
(caller busy 486, unknown 404, offline 408 with Message, no answer 408
without Message after fr_inv_timeout, cancel), C{c_click_to_dial_*} (the
callee rejects: E_CALL_TRANSFER C{fail}), 3.4 README "t_uac_dlg".

The INVITE loops through OpenSIPS itself (its R-URI user is routed by the
script, which calls C{create_dialog()}), so the dialog's "caller" leg is
OpenSIPS' local UAC and its "callee" leg is the caller's phone.

This module is long because CallStart owns two calls at once (the first
call and the transfer's new one) and every way they can end (ring and
callee ring timeouts, CallEnd on either, an answer crossing a cancel) is
one transition table with its actions; the ringing/cancel part could move
to a component like L{Transfer} later.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from callapi import validation
from callapi.errors import error_text
from callapi.opensips.dialog import DialogState, DialogStateChanged
from callapi.opensips.hangup import HangupOutcome
from callapi.scenarios.base import Command
from callapi.scenarios.machine import Flow, Machine
from callapi.scenarios.transfer import Transfer

#: The offer of the click-to-dial INVITE: one PCMU stream, no address (the
#: phone is re-INVITEd / REFERred before any media flows).  As the Go tool.
CLICK_TO_DIAL_SDP = (
    "v=0\r\no=click-to-dial 0 0 IN IP4 0.0.0.0\r\ns=session\r\nc=IN IP4 0.0.0.0\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

#: Longest ring timeout a client may ask for, in seconds.
MAX_RING_TIMEOUT = 600.0


def ring_timeout(name: str, value: Any) -> float:
    """
    A ring timeout in seconds: a number > 0 and <= L{MAX_RING_TIMEOUT}.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_RING_TIMEOUT:
        raise validation.invalid_params(
            f"{name} must be a number of seconds, 0 < {name} <= {MAX_RING_TIMEOUT:g}"
        )
    return float(value)


def _not_ended(outcomes: list[HangupOutcome]) -> str:
    """
    The note an Error text gets for calls the cleanup could not end.
    """
    failed = [o for o in outcomes if not o.done]
    if not failed:
        return ""
    return " (could not end " + ", ".join(f"call {o.callid}: {o.detail}" for o in failed) + ")"


class CallStartPhase(enum.Enum):
    """
    The phases of a CallStart.
    """

    #: created, not run yet
    IDLE = enum.auto()
    #: the INVITE to the caller is out (C{t_uac_dlg}); the phone rings
    CALLING = enum.auto()
    #: the ring timeout fired: C{t_uac_cancel} sent, waiting for the
    #: INVITE's outcome (C{Settings.cancel_grace})
    CANCELLING = enum.auto()
    #: the INVITE failed or was cancelled but the dialog may exist: ending
    #: it through the proxy (C{dlg_end_dlg}) before the C{Error}
    ABANDONING = enum.auto()
    #: the caller answered; waiting for the dialog's 3->4 (at most
    #: C{Settings.answer_confirm_wait}) before the transfer
    ANSWERED = enum.auto()
    #: the L{Transfer} of the caller to the callee runs
    TRANSFERRING = enum.auto()
    #: the transfer is over: ending the first call (C{dlg_end_dlg}) unless
    #: it is gone, then C{CalleeAnswered}'s C{Ended} or the C{Error}
    HANGING_UP = enum.auto()
    DONE = enum.auto()


_S = CallStartPhase

#: CallStart's transition table (docs/scenarios.md).
CALL_START_FLOW = Flow(
    "CallStart",
    CallStartPhase,
    _S.IDLE,
    _S.DONE,
    [
        (_S.IDLE, "started", _S.CALLING, "_call"),
        (_S.CALLING, "invite_answered", (_S.ANSWERED, _S.TRANSFERRING, _S.DONE), "_on_invite_answer"),
        ((_S.CALLING, _S.CANCELLING), "invite_failed", (_S.ABANDONING, _S.DONE), "_on_invite_error"),
        (_S.CALLING, "dialog_changed", _S.CALLING, "_on_dialog_calling"),
        (_S.CALLING, "confirm_waited", (_S.CALLING, _S.ANSWERED, _S.TRANSFERRING), "_answered_by_dialog"),
        (_S.CALLING, "ring_timeout", (_S.CANCELLING, _S.CALLING), "_ring_timeout"),
        ((_S.CALLING, _S.CANCELLING, _S.ABANDONING), "gone_waited", _S.DONE, "_ended_while_ringing"),
        (_S.CANCELLING, "invite_answered", (_S.ABANDONING, _S.DONE), "_on_answer_when_cancelled"),
        (_S.CANCELLING, "dialog_changed", (_S.CANCELLING, _S.ABANDONING, _S.DONE), "_on_dialog_cancelling"),
        (_S.CANCELLING, "cancel_grace_over", _S.ABANDONING, "_abandon"),
        (_S.ABANDONING, "invite_answered", (_S.ABANDONING, _S.DONE), "_on_answer_when_abandoning"),
        (_S.ABANDONING, "invite_failed", (_S.ABANDONING, _S.DONE), "_on_error_when_abandoning"),
        (_S.ABANDONING, "dialog_changed", (_S.ABANDONING, _S.DONE), "_on_dialog_abandoning"),
        (_S.ABANDONING, "hung_up", _S.DONE, "fail"),
        ((_S.ANSWERED, _S.TRANSFERRING), "invite_answered", (_S.ANSWERED, _S.TRANSFERRING), "_on_late_reply"),
        (_S.ANSWERED, "dialog_changed", (_S.ANSWERED, _S.TRANSFERRING, _S.DONE), "_on_dialog_answered"),
        (_S.ANSWERED, "confirm_waited", _S.TRANSFERRING, "_transfer"),
        (_S.TRANSFERRING, "dialog_changed", _S.TRANSFERRING, "_on_dialog_transferring"),
        (_S.TRANSFERRING, "transfer_succeeded", (_S.HANGING_UP, _S.DONE), "_on_transfer_succeeded"),
        (_S.TRANSFERRING, "transfer_failed", (_S.HANGING_UP, _S.DONE), "_hang_up"),
        (_S.HANGING_UP, "dialog_changed", _S.HANGING_UP, "_note_dialog"),
        (_S.HANGING_UP, "hung_up", _S.DONE, "_end_with"),
        (_S.CALLING, "ended_by_api", _S.CANCELLING, "_ended_while_calling"),
        ((_S.ANSWERED, _S.TRANSFERRING), "ended_by_api", _S.ABANDONING, "_ended_after_answer"),
        ((_S.CANCELLING, _S.ABANDONING, _S.HANGING_UP), "ended_by_api", _S.CANCELLING, "_already_ending"),
        (_S.TRANSFERRING, "callee_ring_timeout", (_S.TRANSFERRING, _S.ABANDONING), "_callee_ring_timeout"),
    ],
    abort="_abort_call",
)


class CallStart(Command):
    """
    Params: C{caller}, C{callee} (SIP URIs), optional C{ring_timeout}
    (seconds; default C{Settings.ring_timeout}).

    Started result: also carries C{callid}, the Call-ID of the first call
    (to the caller), so that C{CallEnd} works while it rings; when the
    client gave no C{cmd_id}, it equals the generated C{cmd_id} (as in the
    Go Call API).

    Events: C{CallerAnswered {caller, callee}}, C{Transferring {caller,
    destination}}, C{TransferStart {callid, caller, callee}},
    C{TransferPending {callid, caller, callee, extra}}*, C{CalleeAnswered
    {callid, caller, callee}}, C{Ended}; C{callid} there is the new call's.

    Errors (one C{Error}, then C{Ended}): the caller's final SIP status
    (C{"486 Busy Here"}, C{"404 User Not Found"}, C{"408 Request Timeout"},
    C{"487 Request Terminated"} after a CallEnd while ringing); the ring
    timeout (the INVITE is cancelled); C{"transfer failed with status 486
    Busy Here"} when the callee rejects (the caller's call is then ended);
    OpenSIPS MI errors and timeouts.
    """

    method = "CallStart"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.machine: Machine[CallStartPhase] = Machine(CALL_START_FLOW, self)
        #: Call-ID of the first call; never derived from client input.  When
        #: the server made the cmd_id (a UUID) it is reused, as the Go Call
        #: API does, so Go clients can CallEnd the ringing call by cmd_id.
        self.callid = self.cmd_id if self.cmd_id_generated else str(uuid.uuid4())
        # what the first call's E_DLG_STATE_CHANGED said so far
        self._seen_dialog = False
        self._confirmed = False
        self._first_gone = False
        #: the Error text once the ring timeout cancelled the INVITE
        self._cancel_text: str | None = None
        self._ring_timer: IDelayedCall | None = None
        self._callee_ring_timer: IDelayedCall | None = None
        self.transfer: Transfer | None = None

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 naming the bad parameter.
        """
        checked = validation.check_params(
            params,
            {"caller": validation.sip_uri, "callee": validation.sip_uri},
            {"ring_timeout": ring_timeout, "callee_ring_timeout": ring_timeout},
        )
        if validation.same_address(checked["caller"], checked["callee"]):
            raise validation.invalid_params(
                "caller and callee must be different addresses (the phone would be called to itself)"
            )
        return checked

    def result_extra(self) -> dict[str, Any]:
        return {"callid": self.callid}

    def start(self) -> None:
        self.machine.feed("started")

    # CALLING: call the caller

    def call_ended_by_api(self, callid: str, by_cmd_id: str) -> None:
        """
        L{callapi.interfaces.IDialogOwner}: CallEnd C{by_cmd_id} ends
        C{callid} (the first call or the transfer's new call).
        """
        self.machine.feed("ended_by_api", callid, by_cmd_id)

    def _call(self) -> None:
        caller, callee = self.params["caller"], self.params["callee"]
        feed = self.machine.feed
        self.claim(self.callid)
        self.note_call(self.callid, "ringing")

        def on_dialog(event: DialogStateChanged) -> None:
            feed("dialog_changed", event)

        self.listen_dialog(self.callid, on_dialog)
        ring = self.params.get("ring_timeout", self.ctx.settings.ring_timeout)
        self._ring_timer = self.call_later(ring, feed, "ring_timeout", ring)
        headers = (
            f"From: <{caller}>\r\nTo: <{callee}>\r\nContact: <{caller}>\r\n"
            f"Content-Type: application/sdp\r\nCSeq: 1 INVITE\r\nCall-Id: {self.callid}\r\n"
        )
        params = {"method": "INVITE", "ruri": caller, "headers": headers, "body": CLICK_TO_DIAL_SDP}
        if self.ctx.settings.next_hop:
            params["next_hop"] = self.ctx.settings.next_hop
        # the MI reply comes with the final SIP answer: allow the ring time
        self.request(
            self.ctx.names.uac_dlg,
            params,
            lambda result: feed("invite_answered", result),
            lambda reason: feed("invite_failed", reason),
            timeout=ring + 10.0,
        )

    def _stop_ringing(self) -> None:
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()

    def _note_dialog(self, event: DialogStateChanged) -> None:
        self._seen_dialog = True
        if event.new_state is DialogState.DELETED:
            self._first_gone = True

    def _on_invite_error(self, reason: BaseException) -> _S:
        """
        No usable t_uac_dlg reply (MI timeout, error): if the dialog exists,
        end it through the proxy so the caller is not left in a call.
        """
        if self._seen_dialog and not self._first_gone:
            return self._abandon(error_text(reason))
        self.fail(reason)
        return _S.DONE

    def _on_invite_answer(self, result: Any) -> _S:
        self._stop_ringing()
        status = result.get("Status") if isinstance(result, dict) else None
        if not isinstance(status, str) or status[:1] != "2":
            self.fail(status if isinstance(status, str) else f"unexpected t_uac_dlg result {result!r}")
            return _S.DONE
        return self._caller_answered()

    def _caller_answered(self) -> _S:
        self._stop_ringing()
        self.note_call(self.callid, "connected")
        self.emit("CallerAnswered", {"caller": self.params["caller"], "callee": self.params["callee"]})
        if self._confirmed:
            return self._transfer()
        self.call_later(self.ctx.settings.answer_confirm_wait, self.machine.feed, "confirm_waited")
        return _S.ANSWERED

    def _answered_by_dialog(self) -> _S:
        """
        The dialog was confirmed (3->4: a 2xx and its ACK) but the t_uac_dlg
        reply has not come after C{answer_confirm_wait}: it may be lost
        (a large UDP datagram); go on as answered rather than leave the
        caller in a silent call.
        """
        if self._first_gone:
            return _S.CALLING
        self._log.warn("t_uac_dlg reply for {callid} missing; the dialog is confirmed", callid=self.callid)
        return self._caller_answered()

    def _on_dialog_calling(self, event: DialogStateChanged) -> None:
        self._note_dialog(event)
        if event.new_state is DialogState.CONFIRMED:
            self._confirmed = True
            self.call_later(self.ctx.settings.answer_confirm_wait, self.machine.feed, "confirm_waited")
        elif event.new_state is DialogState.DELETED:
            # ended while ringing (CallEnd, or a rejection whose MI reply
            # is on its way): the t_uac_dlg reply of a cancelled looped
            # INVITE may take fr_inv_timeout (b_click_to_dial_cancel).
            self.call_later(1.0, self.machine.feed, "gone_waited")

    def _ended_while_ringing(self) -> None:
        self.fail(f"487 Request Terminated: the call to {self.params['caller']} ended before it was answered")

    # CANCELLING / ABANDONING: the ring timeout, the INVITE's failure

    def _ring_timeout(self, ring: float) -> _S:
        """
        Cancel the INVITE (C{t_uac_cancel}, trace C{b_click_to_dial_cancel}).
        A 2xx may cross the CANCEL: wait up to C{Settings.cancel_grace} for
        the outcome (dialog deleted -> done; confirmed -> C{dlg_end_dlg}),
        then end the dialog through the proxy anyway (C{dlg_end_dlg} CANCELs
        an early dialog and BYEs a confirmed one; 404 = already gone).
        """
        if self._confirmed:
            return _S.CALLING  # answered: the 200's MI reply is on its way (trace race)
        caller = self.params["caller"]
        if self._seen_dialog:
            text = f"408 Request Timeout: {caller} did not answer within {ring:g} s (INVITE cancelled)"
        else:
            text = (
                f"408 Request Timeout: no answer to the INVITE to {caller} and no dialog "
                f"event within {ring:g} s (INVITE cancelled; is OpenSIPS overloaded or the "
                "event subscription broken?)"
            )
        self._cancel_text = text
        self.request(
            self.ctx.names.uac_cancel, {"callid": self.callid, "cseq": "1"}, lambda _: None, lambda _: None
        )
        self.call_later(self.ctx.settings.cancel_grace, self.machine.feed, "cancel_grace_over", text)
        return _S.CANCELLING

    def _on_answer_when_cancelled(self, result: Any) -> _S:
        # the answer crossed the CANCEL: hang the call up again
        assert self._cancel_text is not None
        status = result.get("Status") if isinstance(result, dict) else None
        if isinstance(status, str) and status[:1] == "2":
            return self._abandon(self._cancel_text)
        self.fail(self._cancel_text)
        return _S.DONE

    def _on_dialog_cancelling(self, event: DialogStateChanged) -> _S:
        assert self._cancel_text is not None
        self._note_dialog(event)
        if event.new_state in (DialogState.CONFIRMED_NOT_ACKED, DialogState.CONFIRMED):
            return self._abandon(self._cancel_text)
        if event.new_state is DialogState.DELETED:
            self.fail(self._cancel_text)
            return _S.DONE
        return _S.CANCELLING

    def _abandon(self, text: str, *others: str) -> _S:
        """
        End the first call (and the calls C{others}) through the proxy
        with the cleanup routine (L{Command.hang_up}), then fail with
        C{text}, which names a call that could not be ended.
        """
        callids = (self.callid, *others)
        outcomes: list[HangupOutcome] = []
        # enter the phase first: an outcome known at once is fed right away
        self.machine.phase = _S.ABANDONING

        def one(outcome: HangupOutcome) -> None:
            outcomes.append(outcome)
            if len(outcomes) == len(callids):
                self.machine.feed("hung_up", text + _not_ended(outcomes))

        for callid in callids:
            self.hang_up(callid, one)
        return _S.ABANDONING

    def _on_answer_when_abandoning(self, result: Any) -> _S:
        status = result.get("Status") if isinstance(result, dict) else None
        if self._cancel_text is not None and not (isinstance(status, str) and status[:1] == "2"):
            self.fail(self._cancel_text)
            return _S.DONE
        return _S.ABANDONING

    def _on_error_when_abandoning(self, reason: BaseException) -> _S:
        if self._seen_dialog and not self._first_gone:
            return _S.ABANDONING
        self.fail(reason)
        return _S.DONE

    def _on_dialog_abandoning(self, event: DialogStateChanged) -> _S:
        self._note_dialog(event)
        if event.new_state is DialogState.DELETED:
            if self._cancel_text is not None:
                self.fail(self._cancel_text)
                return _S.DONE
            self.call_later(1.0, self.machine.feed, "gone_waited")
        return _S.ABANDONING

    # ANSWERED / TRANSFERRING: transfer the answered caller to the callee

    def _on_late_reply(self, result: Any) -> None:
        self._stop_ringing()  # answered through the dialog events already

    def _on_dialog_answered(self, event: DialogStateChanged) -> _S:
        self._note_dialog(event)
        if event.new_state is DialogState.CONFIRMED:
            self._confirmed = True
            return self._transfer()
        if event.new_state is DialogState.DELETED:
            self.fail(f"{self.params['caller']} hung up before the transfer to {self.params['callee']}")
            return _S.DONE
        return _S.ANSWERED

    def _transfer(self) -> _S:
        feed = self.machine.feed
        caller, callee = self.params["caller"], self.params["callee"]

        def event_data(new_callid: str, destination: str | None, extra: str | None) -> Any:
            data = {"callid": new_callid, "caller": caller, "callee": callee}
            if extra is not None:
                data["extra"] = extra
            return data

        self.transfer = Transfer(
            self,
            {"callid": self.callid, "leg": "callee", "destination": callee},
            [self.callid],
            self.callid,
            {"caller": caller, "destination": callee},
            event_data,
            lambda: feed("transfer_succeeded"),
            lambda reason: feed("transfer_failed", reason),
            retry_codes=(404, 410),
            started=self._new_call,
            reconcile_to=callee,
        )
        self.transfer.begin()
        return _S.TRANSFERRING

    def _on_dialog_transferring(self, event: DialogStateChanged) -> None:
        self._note_dialog(event)
        if event.new_state is DialogState.CONFIRMED:
            self._confirmed = True
        elif event.new_state is DialogState.DELETED:
            assert self.transfer is not None
            self.transfer.dialog_gone()

    def _on_transfer_succeeded(self) -> _S:
        transfer = self.transfer
        assert transfer is not None
        self.note_call(transfer.new_callid, "connected")
        self.emit(
            "CalleeAnswered",
            {"callid": transfer.new_callid, "caller": self.params["caller"], "callee": self.params["callee"]},
        )
        return self._hang_up(None)

    # the new call: claimed, bounded ringing

    def _new_call(self, new_callid: str) -> None:
        """
        The transfer's new call is known (C{start}, or found by the
        registry search): claim it and bound its ringing
        (C{callee_ring_timeout}).
        """
        self.claim(new_callid)
        self.note_call(new_callid, "ringing")
        if self._callee_ring_timer is None:
            ring = self.params.get("callee_ring_timeout", self.ctx.settings.callee_ring_timeout)
            self._callee_ring_timer = self.call_later(ring, self.machine.feed, "callee_ring_timeout", ring)

    def _stop_callee_ringing(self) -> None:
        if self._callee_ring_timer is not None and self._callee_ring_timer.active():
            self._callee_ring_timer.cancel()

    def _callee_ring_timeout(self, ring: float) -> _S:
        """
        The target rang too long: cancel its ringing call through the proxy
        (C{dlg_end_dlg} of the early dialog sends CANCEL, trace
        C{3.4/g_dlg_end_dlg}) and end the first call, then the Error.
        """
        transfer = self.transfer
        assert transfer is not None
        if transfer.machine.done:
            return _S.TRANSFERRING  # the outcome is being handled
        new_callid = transfer.new_callid
        transfer.machine.terminate()
        text = (
            f"408 Request Timeout: {self.params['callee']} did not answer within {ring:g} s "
            f"(new call {new_callid} cancelled, call {self.callid} to {self.params['caller']} ended)"
        )
        self._cancel_text = text
        return self._abandon(text, new_callid)

    # CallEnd on one of our calls (IDialogOwner)

    def _ended_while_calling(self, callid: str, by_cmd_id: str) -> _S:
        """
        CallEnd on the ringing first call: cancel the INVITE at once and end
        as the ring timeout does (the dialog's end, or C{cancel_grace} then
        the cleanup, which also hangs up an answer that crossed the cancel).
        """
        self._stop_ringing()
        text = (
            f"487 Request Terminated: the call {self.callid} to {self.params['caller']} was ended "
            f"by CallEnd {by_cmd_id} before it was answered"
        )
        self._cancel_text = text
        self.request(
            self.ctx.names.uac_cancel, {"callid": self.callid, "cseq": "1"}, lambda _: None, lambda _: None
        )
        self.call_later(self.ctx.settings.cancel_grace, self.machine.feed, "cancel_grace_over", text)
        return _S.CANCELLING

    def _ended_after_answer(self, callid: str, by_cmd_id: str) -> _S:
        """
        CallEnd after the caller answered (before or during the transfer):
        never transfer; end the first call and the new one, if any.
        """
        transfer = self.transfer
        others: list[str] = []
        if transfer is not None:
            self._stop_callee_ringing()
            transfer.machine.terminate()
            if transfer.new_callid:
                others.append(transfer.new_callid)
        text = (
            f"487 Request Terminated: call {callid} was ended by CallEnd {by_cmd_id} "
            f"before {self.params['callee']} answered"
        )
        self._cancel_text = text
        return self._abandon(text, *(c for c in others if c != self.callid))

    def _already_ending(self, callid: str, by_cmd_id: str) -> None:
        """
        The calls are being ended already; the CallEnd's own cleanup joins.
        """

    # the one hang-up routine

    def _hang_up(self, reason: BaseException | str | None) -> _S:
        """
        The transfer is over: end the first call through the proxy unless
        the transfer saw it end, then C{Ended} (C{reason} C{None}) or
        C{Error(reason)}: the caller must not stay in a call with nobody.
        """
        assert self.transfer is not None
        self._stop_callee_ringing()
        if self.transfer.old_gone:
            self.note_call(self.callid, "ended")
            self._end_with(reason)
            return _S.DONE

        def done(outcome: HangupOutcome) -> None:
            if reason is None:
                if not outcome.done:
                    self._log.warn(
                        "CallStart {cmd_id}: the first call {callid} could not be ended: {detail}",
                        cmd_id=self.cmd_id,
                        callid=self.callid,
                        detail=outcome.detail,
                    )
                self.machine.feed("hung_up", None)
            else:
                self.machine.feed("hung_up", error_text(reason) if not isinstance(reason, str) else reason)

        self.machine.phase = _S.HANGING_UP  # an outcome known at once is fed right away
        self.hang_up(self.callid, done)
        return _S.HANGING_UP

    def _end_with(self, reason: BaseException | str | None) -> None:
        if reason is None:
            self.end()
        else:
            self.fail(reason)

    # the client left, the daemon stops

    def _abort_call(self, why: str) -> None:
        """
        The client went away: besides releasing everything, do not leave the
        caller's phone in a call with nobody: cancel the INVITE if it may
        still ring and end the first call through the proxy (fire and
        forget: the command is over).
        """
        self.release_call(why)
        self.abort_flow(why)

    def shutdown(self) -> None:
        """
        The daemon stops: the same care as an abort, then the Error.
        """
        self.release_call("shutdown")
        super().shutdown()

    def release_call(self, why: str) -> None:
        """
        Fire-and-forget C{t_uac_cancel} (if it may still ring) and
        C{dlg_end_dlg} of the first call, unless it is known to be gone
        (or the INVITE was never sent).
        """
        phase = self.machine.phase
        if phase is _S.IDLE or phase is _S.DONE or self._first_gone:
            return
        mi, names = self.ctx.mi, self.ctx.names
        self._log.info(
            "{why}: ending the first call {callid} of CallStart {cmd_id}",
            why=why,
            callid=self.callid,
            cmd_id=self.cmd_id,
        )
        if phase in (_S.CALLING, _S.CANCELLING, _S.ABANDONING) and not self._confirmed:
            mi.call(names.uac_cancel, {"callid": self.callid, "cseq": "1"}).addErrback(lambda _: None)
        self.ctx.hangups.end(self.callid, f"{why}: CallStart {self.cmd_id}")


CALL_START_FLOW.check(CallStart)
