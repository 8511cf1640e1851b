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

This module is long because the transfer component and the two commands
built on it share one flow and one set of error texts; splitting the
commands out is planned once the registry-based reconcile
(L{callapi.scenarios.reconcile}) has settled.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from callapi import validation
from callapi.errors import CommandTimeout, MIError, MITimeout, error_text
from callapi.opensips.dialog import (
    DialogState,
    DialogStateChanged,
    TransferEvent,
    TransferState,
)
from callapi.opensips.hangup import HangupOutcome
from callapi.scenarios.base import Command
from callapi.scenarios.machine import Flow, Machine
from callapi.scenarios.reconcile import Found, find_new_call


class TransferPhase(enum.Enum):
    """
    The phases of one transfer (L{Transfer}).
    """

    #: C{call_transfer} sent; E_CALL_TRANSFER events are held back
    REQUESTED = enum.auto()
    #: OpenSIPS accepted: waiting for C{start} (C{transfer_start_timeout})
    ACCEPTED = enum.auto()
    #: the new call exists: waiting for C{ok}/C{fail} (C{transfer_timeout})
    STARTED = enum.auto()
    #: the outcome was reported to the owner; late notifies are absorbed
    DONE = enum.auto()


_T = TransferPhase
_WAITING = (_T.REQUESTED, _T.ACCEPTED, _T.STARTED)

#: The transfer component's transition table (docs/scenarios.md).
TRANSFER_FLOW = Flow(
    "Transfer",
    TransferPhase,
    _T.REQUESTED,
    _T.DONE,
    [
        (_T.REQUESTED, "accepted", (_T.ACCEPTED, _T.STARTED, _T.DONE), "_on_accepted"),
        (_T.REQUESTED, "refused", (_T.REQUESTED, _T.ACCEPTED, _T.STARTED, _T.DONE), "_on_refused"),
        (_T.REQUESTED, "resend", _T.REQUESTED, "send"),
        (_T.REQUESTED, "reported", _T.REQUESTED, "_hold_back"),
        ((_T.ACCEPTED, _T.STARTED), "reported", (_T.STARTED, _T.DONE), "_handle"),
        (_WAITING, "dialog_gone", _WAITING, "_on_dialog_gone"),
        (
            (_T.REQUESTED, _T.ACCEPTED),
            "gone_grace_over",
            (_T.REQUESTED, _T.ACCEPTED, _T.DONE),
            "_gone_before_start",
        ),
        (_T.ACCEPTED, "no_start", (_T.ACCEPTED, _T.DONE), "_no_start"),
        (_T.ACCEPTED, "reconciled", (_T.STARTED, _T.DONE), "_on_reconciled"),
        (_T.STARTED, "new_call_changed", (_T.STARTED, _T.DONE), "_on_new_call_changed"),
        (_T.STARTED, "no_outcome", _T.DONE, "_no_outcome"),
    ],
    abort="_abort",
)


class Transfer:
    """
    One SIP transfer through callops (C{call_transfer}), followed to its
    outcome: a component owned by L{CallBlindTransfer},
    L{CallAttendedTransfer} and L{callapi.scenarios.call_start.CallStart}.

    Notification order: C{Transferring} on the MI reply, then
    C{TransferStart}, C{TransferPending}*, and (by the owner) the success
    event; events that arrive before the MI reply are held back until it.

    The owner registers for its dialog's events and feeds L{dialog_gone};
    the outcome comes back as C{succeeded()} (the new call was answered)
    or C{failed(reason)} (refused, rejected, failed or timed out).

    @ivar machine: the flow, L{TRANSFER_FLOW}.
    @ivar new_callid: the new call's Call-ID once started (else C{""}).
    @ivar destination: the target URI without C{;osid=}, once known.
    @ivar old_gone: the transferred dialog was deleted (E_DLG_STATE_CHANGED
        to 5) while the transfer ran.
    """

    #: event names (the Go Call API's)
    transferring_event = "Transferring"
    start_event = "TransferStart"
    pending_event = "TransferPending"

    def __init__(
        self,
        command: Command,
        mi_params: dict[str, Any],
        watched: list[str],
        old_callid: str,
        transferring_data: Any,
        event_data: Callable[[str, str | None, str | None], Any],
        succeeded: Callable[[], None],
        failed: Callable[[BaseException | str], None],
        retry_codes: tuple[int, ...] = (),
        started: Callable[[str], None] | None = None,
        reconcile_to: str | None = None,
    ) -> None:
        """
        @param command: the owner, whose L{Command.request},
            L{Command.listen_transfers}, L{Command.call_later} and
            L{Command.emit} the transfer uses (so the owner's release
            undoes everything).
        @param mi_params: the named params of C{call_transfer}.
        @param watched: the Call-IDs whose E_CALL_TRANSFER events belong to
            this transfer (two for an attended transfer).
        @param old_callid: the Call-ID of the transferred dialog.
        @param transferring_data: the C{data} of C{Transferring}.
        @param event_data: C{(new Call-ID, destination, NOTIFY status or
            None) -> data} of C{TransferStart}/C{TransferPending}.
        @param retry_codes: MI error codes retried
            C{Settings.transfer_retries} times, C{Settings.transfer_retry_delay}
            apart (CallStart: 404/410, the dialog is not confirmed yet).
        @param started: called with the new call's Call-ID once known (the
            owner claims it).
        @param reconcile_to: the transfer target URI: when no C{start} came,
            the registry is searched for the new call
            (L{callapi.scenarios.reconcile}) before a failure is reported;
            C{None}: no search (attended transfers).
        """
        self.machine: Machine[TransferPhase] = Machine(TRANSFER_FLOW, self)
        self._command = command
        self._mi_params = mi_params
        self._watched = watched
        self.old_callid = old_callid
        self._transferring_data = transferring_data
        self._event_data = event_data
        self._succeeded = succeeded
        self._failed = failed
        self._retry_codes = retry_codes
        self._started = started
        self._reconcile_to = reconcile_to
        self._accepted_at = command.ctx.clock.seconds()
        self._attempts = 0
        self._announced = False
        self._held_back: list[TransferEvent] = []
        self.new_callid = ""
        self.destination: str | None = None
        self.old_gone = False
        self._no_start_timer: IDelayedCall | None = None
        self._outcome_timer: IDelayedCall | None = None

    # inputs from the owner

    def begin(self) -> None:
        """
        Register for E_CALL_TRANSFER on every watched Call-ID and send
        C{call_transfer}.
        """
        feed = self.machine.feed
        for callid in self._watched:
            self._command.listen_transfers(callid, lambda event: feed("reported", event))
        self.send()

    def dialog_gone(self) -> None:
        """
        The transferred dialog was deleted (E_DLG_STATE_CHANGED to 5).
        """
        self.machine.feed("dialog_gone")

    # actions

    def send(self) -> None:
        """
        Send (or re-send) the C{call_transfer} MI request.
        """
        feed = self.machine.feed
        command = self._command
        command.request(
            command.ctx.names.transfer,
            self._mi_params,
            lambda result: feed("accepted", result),
            lambda reason: feed("refused", reason),
        )

    def _abort(self, why: str) -> None:
        """
        Nothing to undo: the owner's release cancels the requests,
        registrations and timers made through it.
        """

    def _on_refused(self, reason: BaseException) -> TransferPhase:
        if isinstance(reason, MITimeout) and self._held_back:
            # the reply ("Accepted") was lost but this transfer's events came:
            # OpenSIPS did accept it (events may precede the reply,
            # c_click_to_dial_transfer_unknown_user)
            self._command._log.warn(
                "no call_transfer reply for {cmd_id}, but its events came", cmd_id=self._command.cmd_id
            )
            return self._on_accepted("Accepted")
        if isinstance(reason, MITimeout) and self._reconcile_to is not None:
            # the request may have reached OpenSIPS and only the reply been
            # lost: call_transfer is not idempotent, so it is never re-sent;
            # whether a new call came of it is learnt from the registry
            # (Transferring is sent before a TransferStart, if one comes);
            # the search may answer at once, so the phase is entered first
            self.machine.phase = _T.ACCEPTED
            return self._reconcile(reason)
        settings = self._command.ctx.settings
        if (
            isinstance(reason, MIError)
            and reason.code in self._retry_codes
            and self._attempts < settings.transfer_retries
        ):
            self._attempts += 1
            self._command.call_later(settings.transfer_retry_delay, self.machine.feed, "resend")
            return _T.REQUESTED
        return self._fail(reason)

    def _on_accepted(self, result: Any) -> TransferPhase:
        if isinstance(result, dict) and isinstance(result.get("Code"), int) and result["Code"] >= 300:
            return self._fail(
                f"REFER rejected with status {result['Code']} {result.get('Reason', '')}".rstrip()
            )
        command = self._command
        self._accepted_at = command.ctx.clock.seconds()
        # counted from OpenSIPS' acceptance (CallStart may have retried)
        timeout = command.ctx.settings.transfer_start_timeout
        self._no_start_timer = command.call_later(timeout, self.machine.feed, "no_start", timeout)
        self._announce()
        phase = _T.ACCEPTED
        held_back, self._held_back = self._held_back, []
        for event in held_back:
            phase = self._handle_in(phase, event)
            if phase is _T.DONE:
                break  # the rest are late notifies or copies
        return phase

    def _announce(self) -> None:
        """
        Send C{Transferring} (once).
        """
        if not self._announced:
            self._announced = True
            self._command.emit(self.transferring_event, self._transferring_data)

    def _hold_back(self, event: TransferEvent) -> None:
        self._held_back.append(event)

    def _on_dialog_gone(self) -> None:
        if self.old_gone:
            return
        self.old_gone = True
        if self.machine.phase is not _T.STARTED:
            # baresip hangs up right after its NOTIFY; when that BYE wins
            # the race, no E_CALL_TRANSFER ever comes (3.4 README, "the
            # NOTIFY race"): do not wait the whole no-event timeout.
            grace = self._command.ctx.settings.transfer_old_gone_grace
            self._command.call_later(grace, self.machine.feed, "gone_grace_over", grace)

    def _gone_before_start(self, grace: float) -> TransferPhase | None:
        if self._held_back:
            return None
        reason = CommandTimeout(
            f"E_CALL_TRANSFER start after the call {self.old_callid} ended "
            "(if the transferee hung up itself, OpenSIPS may not have linked its new call)",
            grace,
        )
        if self.machine.phase is _T.ACCEPTED:
            return self._reconcile(reason)
        return self._fail(reason)

    # reconcile before report

    def _reconcile(self, reason: BaseException) -> TransferPhase:
        """
        No C{start} came: look for the new call in the registry
        (L{find_new_call}) before failing with C{reason}.
        """
        command = self._command
        if self._reconcile_to is None:
            return self._fail(reason)
        if self._no_start_timer is not None and self._no_start_timer.active():
            self._no_start_timer.cancel()
        command._log.info(
            "{cmd_id}: no E_CALL_TRANSFER start; looking for the new call to {to} in the registry",
            cmd_id=command.cmd_id,
            to=self._reconcile_to,
        )
        search = find_new_call(
            command.ctx.registry, self._accepted_at, set(self._watched), self._reconcile_to
        )

        def found(result: Found) -> None:
            if not command.done:
                command._guard(self.machine.feed, "reconciled", result, reason)

        Deferred.fromCoroutine(search).addCallback(found).addErrback(
            lambda f: command._guard(self.machine.feed, "reconciled", Found(None), reason)
        )
        return _T.ACCEPTED

    def _on_reconciled(self, result: Found, reason: BaseException) -> TransferPhase:
        record = result.record
        if record is None:
            text = error_text(reason)
            if result.candidates:
                text += f" (new calls to {self._reconcile_to} that may be it: {', '.join(result.candidates)})"
            return self._fail(text)
        command = self._command
        command._log.warn(
            "{cmd_id}: no E_CALL_TRANSFER start, but the registry has the new call {callid} (state {state})",
            cmd_id=command.cmd_id,
            callid=record.callid,
            state=int(record.state),
        )
        self._start(record.callid, self._reconcile_to)
        if record.state in (DialogState.CONFIRMED_NOT_ACKED, DialogState.CONFIRMED):
            return self._succeed()
        command.listen_dialog(record.callid, lambda event: self.machine.feed("new_call_changed", event))
        return _T.STARTED

    def _on_new_call_changed(self, event: DialogStateChanged) -> TransferPhase:
        if event.new_state in (DialogState.CONFIRMED_NOT_ACKED, DialogState.CONFIRMED):
            return self._succeed()
        if event.new_state is DialogState.DELETED:
            return self._fail(
                f"transfer failed: the new call {self.new_callid} to {self.destination} "
                "ended before it was answered"
            )
        return _T.STARTED

    def _succeed(self) -> TransferPhase:
        if self._outcome_timer is not None and self._outcome_timer.active():
            self._outcome_timer.cancel()
        self.machine.phase = _T.DONE
        self._succeeded()
        return _T.DONE

    def _handle(self, event: TransferEvent) -> TransferPhase:
        return self._handle_in(self.machine.phase, event)

    def _handle_in(self, phase: TransferPhase, event: TransferEvent) -> TransferPhase:
        if phase is _T.STARTED and event.transfer_callid != self.new_callid:
            # another transfer touching the same dialog (an attended transfer
            # raises its events on both Call-IDs): not ours
            self._command._log.info(
                "ignored E_CALL_TRANSFER {state} of another transfer (new call {other}) for {cmd_id}",
                state=event.state.value,
                other=event.transfer_callid,
                cmd_id=self._command.cmd_id,
            )
            return phase
        if phase is _T.ACCEPTED:
            self._start(event.transfer_callid, event.destination)
        state = event.state
        if state is TransferState.NOTIFY:
            self._command.emit(
                self.pending_event, self._event_data(self.new_callid, self.destination, event.status)
            )
        elif state is not TransferState.START:
            if self._outcome_timer is not None and self._outcome_timer.active():
                self._outcome_timer.cancel()
            if state is TransferState.OK:
                self.machine.phase = _T.DONE
                self._succeeded()
            else:
                self._fail(f"transfer failed with status {event.status or 'unknown status'}")
            return _T.DONE
        return _T.STARTED

    def _start(self, new_callid: str, destination: str | None) -> None:
        command = self._command
        self.new_callid = new_callid
        self.destination = destination or self.destination
        if self._no_start_timer is not None and self._no_start_timer.active():
            self._no_start_timer.cancel()
        timeout = command.ctx.settings.transfer_timeout
        self._outcome_timer = command.call_later(timeout, self.machine.feed, "no_outcome", timeout)
        self._announce()
        command.emit(self.start_event, self._event_data(new_callid, self.destination, None))
        if self._started is not None:
            self._started(new_callid)

    def _fail(self, reason: BaseException | str) -> TransferPhase:
        self.machine.phase = _T.DONE
        self._failed(reason)
        return _T.DONE

    def _no_start(self, timeout: float) -> TransferPhase:
        return self._reconcile(
            CommandTimeout(
                "E_CALL_TRANSFER start: the REFER may have been rejected or the "
                "transferee never sent its INVITE",
                timeout,
            )
        )

    def _no_outcome(self, timeout: float) -> TransferPhase:
        return self._fail(
            CommandTimeout(
                f"the outcome of the transfer to {self.destination or 'the target'} "
                f"(new call {self.new_callid})",
                timeout,
            )
        )


TRANSFER_FLOW.check(Transfer)


class TransferPhaseOfCommand(enum.Enum):
    """
    The phases of CallBlindTransfer / CallAttendedTransfer.
    """

    IDLE = enum.auto()
    #: the L{Transfer} runs
    TRANSFERRING = enum.auto()
    #: after success: ending the transferred dialog (C{dlg_end_dlg})
    HANGING_UP = enum.auto()
    DONE = enum.auto()


_C = TransferPhaseOfCommand

#: CallBlindTransfer's and CallAttendedTransfer's transition table.
TRANSFER_COMMAND_FLOW = Flow(
    "CallBlindTransfer / CallAttendedTransfer",
    TransferPhaseOfCommand,
    _C.IDLE,
    _C.DONE,
    [
        (_C.IDLE, "started", _C.TRANSFERRING, "_begin"),
        (_C.TRANSFERRING, "dialog_gone", _C.TRANSFERRING, "_on_dialog_gone"),
        (_C.TRANSFERRING, "transfer_succeeded", (_C.HANGING_UP, _C.DONE), "_on_succeeded"),
        (_C.TRANSFERRING, "transfer_failed", _C.DONE, "fail"),
        (_C.HANGING_UP, "hung_up", _C.DONE, "end"),
    ],
    abort="abort_flow",
)


class TransferCommand(Command):
    """
    What CallBlindTransfer and CallAttendedTransfer share: one L{Transfer}
    of C{old_callid}; after success the transferred dialog is ended if
    still up; a failed transfer leaves the original call as it is.
    """

    success_event = "TransferSuccessful"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.machine: Machine[TransferPhaseOfCommand] = Machine(TRANSFER_COMMAND_FLOW, self)
        self.old_callid, watched, mi_params = self.transfer_target()
        feed = self.machine.feed
        self.transfer = Transfer(
            self,
            mi_params,
            watched,
            self.old_callid,
            self.transferring_data(),
            self.event_data,
            lambda: feed("transfer_succeeded"),
            lambda reason: feed("transfer_failed", reason),
            started=self._new_call,
            reconcile_to=self.reconcile_to(),
        )

    def reconcile_to(self) -> str | None:
        """
        @return: the URI the new call goes to, for the registry search when
            no C{start} came (L{callapi.scenarios.reconcile}); C{None}: no
            search.
        """
        return None

    def _new_call(self, new_callid: str) -> None:
        self.claim(new_callid)
        self.note_call(new_callid, "ringing")

    def transfer_target(self) -> tuple[str, list[str], dict[str, Any]]:
        """
        @return: the transferred Call-ID, the watched Call-IDs and the
            C{call_transfer} params.
        """
        raise NotImplementedError

    def transferring_data(self) -> Any:
        """
        @return: the C{data} of C{Transferring} (C{None}: omitted).
        """
        return None

    def event_data(self, new_callid: str, destination: str | None, extra: str | None = None) -> Any:
        """
        @return: the C{data} of C{TransferStart}/C{TransferPending}/the
            success event.
        """
        raise NotImplementedError

    def start(self) -> None:
        self.machine.feed("started")

    def _begin(self) -> None:
        feed = self.machine.feed

        def on_dialog(event: DialogStateChanged) -> None:
            if event.new_state is DialogState.DELETED:
                feed("dialog_gone")

        self.claim(self.old_callid)
        self.transfer.begin()
        self.listen_dialog(self.old_callid, on_dialog)

    def _on_dialog_gone(self) -> None:
        self.transfer.dialog_gone()

    def _on_succeeded(self) -> _C:
        transfer = self.transfer
        self.note_call(transfer.new_callid, "connected")
        self.emit(self.success_event, self.event_data(transfer.new_callid, transfer.destination))
        if transfer.old_gone:
            self.end()
            return _C.DONE
        self.machine.phase = _C.HANGING_UP  # an outcome known at once is fed right away
        self.hang_up(self.old_callid, self._hung_up)
        return _C.HANGING_UP

    def _hung_up(self, outcome: HangupOutcome) -> None:
        if not outcome.done:
            self._log.warn(
                "{method} {cmd_id}: the transferred call {callid} could not be ended: {detail}",
                method=self.method,
                cmd_id=self.cmd_id,
                callid=outcome.callid,
                detail=outcome.detail,
            )
        self.machine.feed("hung_up")


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
        return validation.check_params(
            params, {"callid": validation.callid, "leg": validation.leg, "destination": validation.sip_uri}
        )

    def transfer_target(self) -> tuple[str, list[str], dict[str, Any]]:
        callid = self.params["callid"]
        return (
            callid,
            [callid],
            {"callid": callid, "leg": self.params["leg"], "destination": self.params["destination"]},
        )

    def transferring_data(self) -> Any:
        return {"destination": self.params["destination"]}

    def reconcile_to(self) -> str | None:
        return str(self.params["destination"])

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
            {
                "callidA": validation.callid,
                "legA": validation.leg,
                "callidB": validation.callid,
                "legB": validation.leg,
            },
            {"destination": validation.sip_uri},
        )
        if checked["callidA"] == checked["callidB"]:
            raise validation.invalid_params("callidA and callidB must be different calls")
        return checked

    def transfer_target(self) -> tuple[str, list[str], dict[str, Any]]:
        params = {
            "callid": self.params["callidA"],
            "leg": self.params["legA"],
            "transfer_callid": self.params["callidB"],
            "transfer_leg": self.params["legB"],
        }
        if "destination" in self.params:
            params["destination"] = self.params["destination"]
        return self.params["callidA"], [self.params["callidA"], self.params["callidB"]], params

    def event_data(self, new_callid: str, destination: str | None, extra: str | None = None) -> Any:
        data: dict[str, Any] = {
            "callid": new_callid,
            "destination": destination or self.params.get("destination", ""),
        }
        if extra is not None:
            data["extra"] = extra
        return data


TRANSFER_COMMAND_FLOW.check(CallBlindTransfer)
