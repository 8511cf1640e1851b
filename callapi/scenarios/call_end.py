"""
C{CallEnd}: ends a dialog through OpenSIPS with the daemon's cleanup
(L{callapi.opensips.hangup}): the Call-ID is resolved to the live dialog's
internal ID, then MI C{dlg_end_dlg dialog_id=<ID>} (C{dialog:end_dlg} in
4.0), which sends BYE to both legs of a confirmed dialog or CANCEL towards
the callee of an early one (trace C{3.4/g_dlg_end_dlg}), retried until
OpenSIPS confirms.  A command that owns the call (a ringing CallStart) is
told at once (L{callapi.interfaces.IDialogOwner.call_ended_by_api}).
"""

from __future__ import annotations

from typing import Any

from callapi import validation
from callapi.opensips.hangup import HangupOutcome, retryable
from callapi.scenarios.base import Command

#: The Error text for a Call-ID that is no live dialog's (OpenSIPS' own text).
NOT_FOUND = "404 Requested Dialog not found"


class CallEnd(Command):
    """
    Params: C{callid} (SIP Call-ID, matched only as a Call-ID, never as an
    internal dialog ID).  Events: C{Ended} once OpenSIPS ended the dialog
    (or, when a running command owned it and OpenSIPS no longer has it,
    once that command was told); on failure C{Error} then C{Ended}:
    C{"404 Requested Dialog not found"} (no live dialog has that Call-ID),
    OpenSIPS' non-retryable error, or C{"could not end call <callid>: ..."}
    after the cleanup's deadline.
    """

    method = "CallEnd"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the owner of the call that was told (its cmd_id), or C{None}
        self.told: str | None = None

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 when C{callid} is missing or not a Call-ID.
        """
        return validation.check_params(params, {"callid": validation.callid})

    def start(self) -> None:
        callid = self.params["callid"]
        owner = self.ctx.registry.owner(callid)
        if owner is not None and owner is not self:
            self._log.info(
                "CallEnd {cmd_id}: telling {method} {owner} that {callid} ends",
                cmd_id=self.cmd_id,
                method=owner.method,
                owner=owner.cmd_id,
                callid=callid,
            )
            self.told = owner.cmd_id
            owner.call_ended_by_api(callid, self.cmd_id)
        self.hang_up(callid, self._ended)

    def _ended(self, outcome: HangupOutcome) -> None:
        if outcome.result == "ended" or (outcome.result == "gone" and self.told is not None):
            self.end()
        elif outcome.result == "gone":
            self.fail(NOT_FOUND)
        elif outcome.last_error is not None and not retryable(outcome.last_error):
            self.fail(outcome.last_error)
        else:
            self.note_call(outcome.callid, "unknown")
            self.fail(f"could not end call {outcome.callid}: {outcome.detail}")
