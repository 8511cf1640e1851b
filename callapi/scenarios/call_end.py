"""
C{CallEnd}: ends a dialog through OpenSIPS with MI C{dlg_end_dlg}
(C{dialog:end_dlg} in 4.0), which sends BYE to both legs of a confirmed
dialog or CANCEL towards the callee of an early one (trace C{g_dlg_end_dlg}).
"""

from __future__ import annotations

from typing import Any

from callapi import validation
from callapi.scenarios.base import Command


class CallEnd(Command):
    """
    Params: C{callid} (SIP Call-ID).  Events: C{Ended}; on failure C{Error}
    with OpenSIPS' code and text, e.g. C{"404 Requested Dialog not found"},
    or the MI timeout, then C{Ended}.
    """

    method = "CallEnd"

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        @raise RPCError: -32602 when C{callid} is missing or not a Call-ID.
        """
        return validation.check_params(params, {"callid": validation.callid})

    def start(self) -> None:
        self.request(self.ctx.names.end_dialog, {"dialog_id": self.params["callid"]}, lambda _: self.end())
