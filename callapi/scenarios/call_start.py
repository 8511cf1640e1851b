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
"""

from __future__ import annotations

import uuid
from typing import Any

from callapi import validation
from callapi.errors import MIError, error_text
from callapi.scenarios.transfer import TransferCommand

#: The offer of the click-to-dial INVITE: one PCMU stream, no address (the
#: phone is re-INVITEd / REFERred before any media flows).  As the Go tool.
CLICK_TO_DIAL_SDP = (
    "v=0\r\no=click-to-dial 0 0 IN IP4 0.0.0.0\r\ns=session\r\nc=IN IP4 0.0.0.0\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

#: Longest ring timeout a client may ask for, in seconds.
MAX_RING_TIMEOUT = 600.0


def ring_timeout(name: str, value: Any) -> float:
    """
    A ring timeout in seconds: a number > 0 and <= L{MAX_RING_TIMEOUT}.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_RING_TIMEOUT:
        raise validation.invalid_params(f"{name} must be a number of seconds, 0 < {name} <= {MAX_RING_TIMEOUT:g}")
    return float(value)


class CallStart(TransferCommand):
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
    success_event = "CalleeAnswered"
    end_old_dialog_on_failure = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Call-ID of the first call; never derived from client input.  When
        #: the server made the cmd_id (a UUID) it is reused, as the Go Call
        #: API does, so Go clients can CallEnd the ringing call by cmd_id.
        self.callid = self.cmd_id if self.cmd_id_generated else str(uuid.uuid4())

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 naming the bad parameter.
        """
        return validation.check_params(
            params, {"caller": validation.sip_uri, "callee": validation.sip_uri},
            {"ring_timeout": ring_timeout})

    def result_extra(self) -> dict[str, Any]:
        return {"callid": self.callid}

    # phase 1: call the caller

    def start(self) -> None:
        caller, callee = self.params["caller"], self.params["callee"]
        self._answered = False
        self._confirmed = False
        self._transferring = False
        self._attempts = 0
        self._seen_dialog = False  # any E_DLG_STATE_CHANGED of the first call
        self._first_gone = False
        self._cancelling: str | None = None  # the Error text once the ring timeout fired
        self._ending = False
        self.listen("E_DLG_STATE_CHANGED", self.callid, self._on_first_dialog)
        ring = self.params.get("ring_timeout", self.ctx.settings.ring_timeout)
        self._ring_timer = self.call_later(ring, self._ring_timeout, ring)
        headers = (f"From: <{caller}>\r\nTo: <{callee}>\r\nContact: <{caller}>\r\n"
                   f"Content-Type: application/sdp\r\nCSeq: 1 INVITE\r\nCall-Id: {self.callid}\r\n")
        params = {"method": "INVITE", "ruri": caller, "headers": headers,
                  "body": CLICK_TO_DIAL_SDP}
        if self.ctx.settings.next_hop:
            params["next_hop"] = self.ctx.settings.next_hop
        # the MI reply comes with the final SIP answer: allow the ring time
        self.request(self.ctx.names.uac_dlg, params, self._on_invite_answer,
                     self._on_invite_error, timeout=ring + 10.0)

    def _on_invite_error(self, reason: BaseException) -> None:
        """
        No usable t_uac_dlg reply (MI timeout, error): if the dialog exists,
        end it through the proxy so the caller is not left in a call.
        """
        if self._answered:
            return  # answered through the dialog events already
        if self._seen_dialog and not self._first_gone:
            self._end_first_and_fail(error_text(reason))
        else:
            self.fail(reason)

    def _on_invite_answer(self, result: Any) -> None:
        if self._ring_timer.active():
            self._ring_timer.cancel()
        if self._answered:
            return  # already answered through the dialog events (reply was late)
        status = result.get("Status") if isinstance(result, dict) else None
        if self._cancelling is not None:
            # the answer crossed the CANCEL: hang the call up again
            if isinstance(status, str) and status[:1] == "2":
                self._end_first_and_fail(self._cancelling)
            else:
                self.fail(self._cancelling)
            return
        if not isinstance(status, str) or not status[:1] == "2":
            self.fail(status if isinstance(status, str) else f"unexpected t_uac_dlg result {result!r}")
            return
        self._caller_answered()

    def _caller_answered(self) -> None:
        self._answered = True
        if self._ring_timer.active():
            self._ring_timer.cancel()
        self.emit("CallerAnswered", {"caller": self.params["caller"], "callee": self.params["callee"]})
        if self._confirmed:
            self._transfer()
        else:
            self.call_later(self.ctx.settings.answer_confirm_wait, self._transfer)

    def _answered_by_dialog(self) -> None:
        """
        The dialog was confirmed (3->4: a 2xx and its ACK) but the t_uac_dlg
        reply has not come after C{answer_confirm_wait}: it may be lost
        (a large UDP datagram); go on as answered rather than leave the
        caller in a silent call.
        """
        if not self._answered and self._cancelling is None and not self._first_gone:
            self._log.warn("t_uac_dlg reply for {callid} missing; the dialog is confirmed",
                           callid=self.callid)
            self._caller_answered()

    def _on_first_dialog(self, params: dict[str, Any]) -> None:
        new_state = params.get("new_state")
        self._seen_dialog = True
        if new_state == 5:
            self._first_gone = True
        if self._cancelling is not None:
            if new_state in (3, 4):
                self._end_first_and_fail(self._cancelling)
            elif new_state == 5:
                self.fail(self._cancelling)
            return
        if new_state == 4:
            self._confirmed = True
            if self._answered:
                self._transfer()
            else:
                self.call_later(self.ctx.settings.answer_confirm_wait, self._answered_by_dialog)
        elif new_state == 5 and not self._transferring:
            if self._answered:
                self.fail(f"{self.params['caller']} hung up before the transfer to "
                          f"{self.params['callee']}")
            else:
                # ended while ringing (CallEnd, or a rejection whose MI reply
                # is on its way): the t_uac_dlg reply of a cancelled looped
                # INVITE may take fr_inv_timeout (b_click_to_dial_cancel).
                self.call_later(1.0, self._ended_while_ringing)

    def _ended_while_ringing(self) -> None:
        if not self._answered:
            self.fail(f"487 Request Terminated: the call to {self.params['caller']} "
                      "ended before it was answered")

    def _ring_timeout(self, ring: float) -> None:
        """
        Cancel the INVITE (C{t_uac_cancel}, trace C{b_click_to_dial_cancel}).
        A 2xx may cross the CANCEL: wait up to C{Settings.cancel_grace} for
        the outcome (dialog deleted -> done; confirmed -> C{dlg_end_dlg}),
        then end the dialog through the proxy anyway (C{dlg_end_dlg} CANCELs
        an early dialog and BYEs a confirmed one; 404 = already gone).
        """
        if self._answered or self._confirmed:
            return  # answered: the 200's MI reply is on its way (trace race)
        caller = self.params["caller"]
        if self._seen_dialog:
            text = (f"408 Request Timeout: {caller} did not answer within {ring:g} s "
                    "(INVITE cancelled)")
        else:
            text = (f"408 Request Timeout: no answer to the INVITE to {caller} and no dialog "
                    f"event within {ring:g} s (INVITE cancelled; is OpenSIPS overloaded or the "
                    "event subscription broken?)")
        self._cancelling = text
        self.request(self.ctx.names.uac_cancel, {"callid": self.callid, "cseq": "1"},
                     lambda _: None, lambda _: None)
        self.call_later(self.ctx.settings.cancel_grace, self._end_first_and_fail, text)

    def _end_first_and_fail(self, text: str) -> None:
        if self._ending:
            return
        self._ending = True
        self.request(self.ctx.names.end_dialog, {"dialog_id": self.callid},
                     lambda _: self.fail(text), lambda _: self.fail(text))

    def abort(self, why: str = "aborted") -> None:
        """
        The client went away: besides releasing everything, do not leave the
        caller's phone in a call with nobody: cancel the INVITE if it may
        still ring and end the first call through the proxy (fire and
        forget: the command is over).
        """
        self.release_call(why)
        super().abort(why)

    def shutdown(self) -> None:
        """
        The daemon stops: the same care as L{abort}, then the Error.
        """
        self.release_call("shutdown")
        super().shutdown()

    def release_call(self, why: str) -> None:
        """
        Fire-and-forget C{t_uac_cancel} (if it may still ring) and
        C{dlg_end_dlg} of the first call, unless it is known to be gone.
        """
        if self.done or self._lifecycle == "created" or self._first_gone:
            return
        mi, names = self.ctx.mi, self.ctx.names
        self._log.info("{why}: ending the first call {callid} of CallStart {cmd_id}",
                       why=why, callid=self.callid, cmd_id=self.cmd_id)
        if not (self._answered or self._confirmed):
            mi.call(names.uac_cancel, {"callid": self.callid, "cseq": "1"}).addErrback(
                lambda _: None)
        mi.call(names.end_dialog, {"dialog_id": self.callid}).addErrback(lambda _: None)

    # phase 2: transfer the answered caller to the callee

    def _transfer(self) -> None:
        if self._transferring:
            return
        self._transferring = True
        self.begin_transfer()

    def transfer_refused(self, reason: BaseException) -> None:
        """
        Retry a 404/410 (the proxy's dialog is not confirmed yet) a bounded
        number of times; fail otherwise.
        """
        settings = self.ctx.settings
        if (isinstance(reason, MIError) and reason.code in (404, 410)
                and self._attempts < settings.transfer_retries):
            self._attempts += 1
            self.call_later(settings.transfer_retry_delay, self.send_transfer)
            return
        self.end_old_dialog(lambda: self.fail(reason))

    def transfer_params(self) -> dict[str, Any]:
        return {"callid": self.callid, "leg": "callee", "destination": self.params["callee"]}

    def watched_callids(self) -> list[str]:
        return [self.callid]

    def old_callid(self) -> str:
        return self.callid

    def transferring_data(self) -> Any:
        return {"caller": self.params["caller"], "destination": self.params["callee"]}

    def event_data(self, new_callid: str, destination: str | None, extra: str | None = None) -> Any:
        data = {"callid": new_callid, "caller": self.params["caller"],
                "callee": self.params["callee"]}
        if extra is not None:
            data["extra"] = extra
        return data
