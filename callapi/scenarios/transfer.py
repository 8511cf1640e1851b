"""
Following a SIP transfer (REFER, RFC 3515) that OpenSIPS' callops module
starts with MI C{call_transfer} (C{callops:transfer} in 4.0), and the blind
and attended transfer commands built on it.

What OpenSIPS does (3.4 README "call_transfer" and "E_CALL_TRANSFER"):

  - C{call_transfer} answers C{"Accepted"} as soon as the REFER left; the
    REFER's own answer is not awaited, and a rejected REFER raises no event
    at all (trace C{d_blind_transfer_refer_rejected}).  callops' source also
    has a C{{"Code": int, "Reason": str}} result: C{Code} >= 300 is a failure.
  - The outcome arrives as E_CALL_TRANSFER events with C{state} C{start}
    (the new INVITE reached the proxy), C{notify} (a NOTIFY sipfrag, RFC 3515
    section 2.4.5), C{ok} (2xx) or C{fail} (>= 300; spelled C{fail}).
    Events may precede the MI reply (C{c_click_to_dial_transfer_unknown_user}),
    notifies may follow C{ok}/C{fail}, an attended transfer raises every state
    twice (once per Call-ID, C{e_attended_transfer}), and the blind C{start}
    carries junk in C{leg}: only C{transfer_callid} names the new call.
  - No event at all is a real outcome (REFER rejected, the NOTIFY race lost,
    a UA without Replaces support): every transfer is bounded in time.
  - Errors: 404 "Dialog not found", 404 "Transfer dialog not found",
    491 "Request Pending" (a transfer of that call runs or ran).
"""

from __future__ import annotations

from typing import Any

from callapi import validation
from callapi.errors import CommandTimeout, MIError, MITimeout
from callapi.scenarios.base import Command


class TransferCommand(Command):
    """
    Shared logic of every command that waits for a transfer's outcome.

    Subclasses provide L{transfer_params}, L{watched_callids}, the Call-ID
    of the dialog to end after success (L{old_callid}) and the event data
    (L{event_data}); they may override L{on_success} / L{on_failure}.

    Notification order: C{Transferring} on the MI reply, then
    C{TransferStart}, C{TransferPending}*, and the success event; events
    that arrive before the MI reply are held back until it.
    """

    #: event names (the Go Call API's)
    transferring_event = "Transferring"
    start_event = "TransferStart"
    pending_event = "TransferPending"
    success_event = "TransferSuccessful"
    #: end the transferred dialog after a failed transfer too (CallStart:
    #: the caller would otherwise sit in a call with nobody)
    end_old_dialog_on_failure = False

    # hooks

    def transfer_params(self) -> dict[str, Any]:
        """
        @return: the named params of the C{call_transfer} MI request.
        """
        raise NotImplementedError

    def watched_callids(self) -> list[str]:
        """
        @return: the Call-IDs whose E_CALL_TRANSFER events belong to this
            transfer (two for an attended transfer).
        """
        raise NotImplementedError

    def old_callid(self) -> str:
        """
        @return: the Call-ID of the dialog that is transferred (ended after
            success if still up).
        """
        raise NotImplementedError

    def transferring_data(self) -> Any:
        """
        @return: the C{data} of the C{Transferring} notification (C{None}:
            omitted).
        """
        return None

    def event_data(self, new_callid: str, destination: str | None, extra: str | None = None) -> Any:
        """
        @param new_callid: the new call's Call-ID (EVI C{transfer_callid}).
        @param destination: the target URI without C{;osid=}, if known.
        @param extra: the NOTIFY sipfrag status (C{TransferPending} only).
        @return: the C{data} of C{TransferStart}/C{TransferPending}/the
            success event.
        """
        raise NotImplementedError

    # the flow

    def begin_transfer(self) -> None:
        """
        Register for events, send C{call_transfer}, arm the no-event timer.
        """
        self._accepted = False
        self._held_back: list[dict[str, Any]] = []
        self._started = False
        self._finished = False
        self._new_callid = ""
        self._destination: str | None = None
        self._old_gone = False
        for callid in self.watched_callids():
            self.listen("E_CALL_TRANSFER", callid, self._on_transfer_event)
        self.listen("E_DLG_STATE_CHANGED", self.old_callid(), self._on_old_dialog)
        self._no_event_timer: Any = None
        self._outcome_timer: Any = None
        self.send_transfer()

    def send_transfer(self) -> None:
        """
        Send (or re-send) the C{call_transfer} MI request.
        """
        self.request(self.ctx.names.transfer, self.transfer_params(), self._on_accepted,
                     self._on_transfer_error)

    def _on_transfer_error(self, reason: BaseException) -> None:
        if isinstance(reason, MITimeout) and self._held_back:
            # the reply ("Accepted") was lost but this transfer's events came:
            # OpenSIPS did accept it (events may precede the reply,
            # c_click_to_dial_transfer_unknown_user)
            self._log.warn("no call_transfer reply for {cmd_id}, but its events came",
                           cmd_id=self.cmd_id)
            self._on_accepted("Accepted")
            return
        self.transfer_refused(reason)

    def transfer_refused(self, reason: BaseException) -> None:
        """
        OpenSIPS refused C{call_transfer} (e.g. C{"491 Request Pending"},
        C{"404 Dialog not found"}) or did not answer: fail.
        """
        self.fail(reason)

    def _on_accepted(self, result: Any) -> None:
        if isinstance(result, dict) and isinstance(result.get("Code"), int) and result["Code"] >= 300:
            self.transfer_failed(
                f"REFER rejected with status {result['Code']} {result.get('Reason', '')}".rstrip())
            return
        self._accepted = True
        if not self._started:
            # counted from OpenSIPS' acceptance (CallStart may have retried)
            timeout = self.ctx.settings.transfer_start_timeout
            self._no_event_timer = self.call_later(timeout, self._no_start, timeout)
        self.emit(self.transferring_event, self.transferring_data())
        held_back, self._held_back = self._held_back, []
        for params in held_back:
            self._handle(params)

    def _on_old_dialog(self, params: dict[str, Any]) -> None:
        if params.get("new_state") == 5 and not self._old_gone:
            self._old_gone = True
            if not self._started:
                # baresip hangs up right after its NOTIFY; when that BYE wins
                # the race, no E_CALL_TRANSFER ever comes (3.4 README, "the
                # NOTIFY race"): do not wait the whole no-event timeout.
                grace = self.ctx.settings.transfer_old_gone_grace
                self.call_later(grace, self._gone_before_start, grace)

    def _gone_before_start(self, grace: float) -> None:
        if not self._started and not self._held_back:
            self.transfer_failed(CommandTimeout(
                f"E_CALL_TRANSFER start after the call {self.old_callid()} ended "
                "(if the transferee hung up itself, OpenSIPS may not have linked its new call)",
                grace))

    def _on_transfer_event(self, params: dict[str, Any]) -> None:
        if self._accepted:
            self._handle(params)
        else:
            self._held_back.append(params)

    def _handle(self, params: dict[str, Any]) -> None:
        state = params.get("state")
        new_callid = params.get("transfer_callid")
        if not isinstance(new_callid, str) or state not in ("start", "notify", "ok", "fail"):
            self._log.warn("ignored E_CALL_TRANSFER {params} for {cmd_id}", params=params,
                           cmd_id=self.cmd_id)
            return
        if self._finished:
            return  # late notify, or the attended transfer's second copy
        if self._started and new_callid != self._new_callid:
            # another transfer touching the same dialog (an attended transfer
            # raises its events on both Call-IDs): not ours
            self._log.info("ignored E_CALL_TRANSFER {state} of another transfer (new call "
                           "{other}) for {cmd_id}", state=state, other=new_callid,
                           cmd_id=self.cmd_id)
            return
        destination = params.get("destination") or None
        if destination and ";osid=" in destination:
            destination = destination.split(";osid=", 1)[0]
        if state == "start":
            if not self._started:
                self._start(new_callid, destination)
        elif state == "notify":
            if not self._started:
                self._start(new_callid, destination)
            self.emit(self.pending_event,
                      self.event_data(self._new_callid, self._destination, params.get("status")))
        else:
            if not self._started:
                self._start(new_callid, destination)
            self._finished = True
            if self._outcome_timer is not None and self._outcome_timer.active():
                self._outcome_timer.cancel()
            if state == "ok":
                self.on_success()
            else:
                self.on_failure(str(params.get("status") or "unknown status"))

    def _start(self, new_callid: str, destination: str | None) -> None:
        self._started = True
        self._new_callid = new_callid
        self._destination = destination or self._destination
        if self._no_event_timer is not None and self._no_event_timer.active():
            self._no_event_timer.cancel()
        timeout = self.ctx.settings.transfer_timeout
        self._outcome_timer = self.call_later(timeout, self._no_outcome, timeout)
        self.emit(self.start_event, self.event_data(new_callid, self._destination))

    def on_success(self) -> None:
        """
        The new call was answered: report it, end the old dialog if it is
        still up, then C{Ended}.
        """
        self.emit(self.success_event, self.event_data(self._new_callid, self._destination))
        self.end_old_dialog(self.end)

    def on_failure(self, status: str) -> None:
        """
        The new call failed with SIP C{status} (e.g. C{"486 Busy Here"}).
        """
        self.transfer_failed(f"transfer failed with status {status}")

    def transfer_failed(self, reason: BaseException | str) -> None:
        """
        End the command with C{Error(reason)}; first end the transferred
        dialog when L{end_old_dialog_on_failure} (CallStart: the caller
        must not stay in a call with nobody).
        """
        if self.end_old_dialog_on_failure:
            self.end_old_dialog(lambda: self.fail(reason))
        else:
            self.fail(reason)

    def end_old_dialog(self, then: Any) -> None:
        """
        End the transferred dialog through OpenSIPS (C{dlg_end_dlg}) unless
        it is known to be gone; a 404 (the transferee already hung up, trace
        C{d_blind_transfer_callee_success}) is not an error.  Calls C{then()}.
        """
        if self._old_gone:
            then()
            return

        def failed(reason: BaseException) -> None:
            if not (isinstance(reason, MIError) and reason.code == 404):
                self._log.warn("could not end dialog {callid} after the transfer: {error}",
                               callid=self.old_callid(), error=str(reason))
            then()

        self.request(self.ctx.names.end_dialog, {"dialog_id": self.old_callid()},
                     lambda _: then(), failed)

    def _no_start(self, timeout: float) -> None:
        if not self._started:
            self.transfer_failed(CommandTimeout(
                "E_CALL_TRANSFER start: the REFER may have been rejected or the "
                "transferee never sent its INVITE", timeout))

    def _no_outcome(self, timeout: float) -> None:
        self.transfer_failed(CommandTimeout(f"the outcome of the transfer to {self._destination or 'the target'} "
                                 f"(new call {self._new_callid})", timeout))


class CallBlindTransfer(TransferCommand):
    """
    Params: C{callid}, C{leg} (C{caller}/C{callee}: the party that gets the
    REFER and calls C{destination}), C{destination} (SIP URI).

    Events: C{Transferring {destination}}, C{TransferStart {callid,
    destination}}, C{TransferPending {callid, destination, extra}}*,
    C{TransferSuccessful {callid, destination}}, C{Ended} (C{callid} = the
    new call's Call-ID).  After success the transferred dialog is ended if
    still up.  Failures: C{"transfer failed with status 486 Busy Here"};
    OpenSIPS errors C{"404 Dialog not found"}, C{"491 Request Pending"};
    timeouts naming the wait.  A failed transfer leaves the original call
    as it is.
    """

    method = "CallBlindTransfer"

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 naming the bad parameter.
        """
        return validation.check_params(params, {
            "callid": validation.callid, "leg": validation.leg,
            "destination": validation.sip_uri})

    def start(self) -> None:
        self._destination = self.params["destination"]
        self.begin_transfer()

    def transfer_params(self) -> dict[str, Any]:
        return {"callid": self.params["callid"], "leg": self.params["leg"],
                "destination": self.params["destination"]}

    def watched_callids(self) -> list[str]:
        return [self.params["callid"]]

    def old_callid(self) -> str:
        return self.params["callid"]

    def transferring_data(self) -> Any:
        return {"destination": self.params["destination"]}

    def event_data(self, new_callid: str, destination: str | None, extra: str | None = None) -> Any:
        data = {"callid": new_callid, "destination": destination or self.params["destination"]}
        if extra is not None:
            data["extra"] = extra
        return data


class CallAttendedTransfer(TransferCommand):
    """
    Params: C{callidA}, C{legA} (the party of call A that gets the REFER),
    C{callidB}, C{legB} (the party of call B it is connected to, via
    C{Replaces}), optional C{destination} (SIP URI; default: that party's
    URI, as callops does).

    Events: C{Transferring}, C{TransferStart {callid, destination}},
    C{TransferPending {callid, destination, extra}}*, C{TransferSuccessful
    {callid, destination}}, C{Ended}.  OpenSIPS raises each state once per
    Call-ID; each is reported once.  After success call A is ended if still
    up.  Errors as L{CallBlindTransfer} plus C{"404 Transfer dialog not
    found"}.
    """

    method = "CallAttendedTransfer"

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 naming the bad parameter.
        """
        checked = validation.check_params(
            params,
            {"callidA": validation.callid, "legA": validation.leg,
             "callidB": validation.callid, "legB": validation.leg},
            {"destination": validation.sip_uri})
        if checked["callidA"] == checked["callidB"]:
            raise validation.invalid_params("callidA and callidB must be different calls")
        return checked

    def start(self) -> None:
        self.begin_transfer()

    def transfer_params(self) -> dict[str, Any]:
        params = {"callid": self.params["callidA"], "leg": self.params["legA"],
                  "transfer_callid": self.params["callidB"],
                  "transfer_leg": self.params["legB"]}
        if "destination" in self.params:
            params["destination"] = self.params["destination"]
        return params

    def watched_callids(self) -> list[str]:
        return [self.params["callidA"], self.params["callidB"]]

    def old_callid(self) -> str:
        return self.params["callidA"]

    def event_data(self, new_callid: str, destination: str | None, extra: str | None = None) -> Any:
        data: dict[str, Any] = {"callid": new_callid,
                                "destination": destination or self.params.get("destination", "")}
        if extra is not None:
            data["extra"] = extra
        return data
