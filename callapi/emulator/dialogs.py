"""
The emulator's dialog module MI commands: C{dlg_list} / C{dlg_list_ctx}
(all, by C{callid}, paged with C{index}/C{counter}) and C{dlg_end_dlg}
(C{dialog_id} looked up as OpenSIPS' C{get_dlg_by_dialog_id} does: the
internal ID form first, then the Call-ID).

Traces followed (under C{../shared/opensips-traces}):
C{3.4/i_dlg_list.jsonl}, C{3.4/g_dlg_end_dlg.jsonl},
C{3.4/c_click_to_dial_transfer_unknown_user.jsonl}.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from callapi.emulator import sip, timings
from callapi.emulator.invite import Final
from callapi.emulator.mi_table import ASYNC, Handler, MIError, Respond, param_int, param_str
from callapi.emulator.sip import Dialog

if TYPE_CHECKING:
    from callapi.emulator.core import OpenSIPSEmulator


class DialogCommands:
    """
    C{dlg_list}, C{dlg_list_ctx} and C{dlg_end_dlg}.

    @param emu: the emulator whose dialog table and scheduler it uses.
    """

    def __init__(self, emu: OpenSIPSEmulator) -> None:
        self._emu = emu

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {
            "dialog:list": self._cmd_dlg_list,
            "dialog:list_ctx": lambda p, r: self._cmd_dlg_list(p, r, ctx=True),
            "dialog:end_dlg": self._cmd_end_dlg,
        }

    def dialog_json(self, dlg: Dialog, ctx: bool = False) -> dict[str, Any]:
        """One dialog as dlg_list prints it (3.4/i_dlg_list.jsonl)."""
        out: dict[str, Any] = {
            "ID": dlg.dialog_id,
            "db_id": dlg.db_id,
            "state": dlg.state,
            "user_flags": "",
            "timestart": dlg.timestart,
        }
        if dlg.timestart:
            out["datestart"] = sip.local_time(dlg.timestart)
        timeout = dlg.timestart + timings.DIALOG_TIMEOUT_S if dlg.timestart and dlg.active else 0
        out["timeout"] = timeout
        if timeout:
            out["dateout"] = sip.local_time(timeout)
        out.update(
            {
                "callid": dlg.callid,
                "from_uri": dlg.from_uri,
                "to_uri": dlg.to_uri,
                "caller_tag": dlg.caller.tag or "",
                "caller_contact": dlg.caller.contact,
                "callee_cseq": str(dlg.callee.cseq),
                "caller_route_set": "",
                "caller_bind_addr": timings.BIND_ADDR,
            }
        )
        if dlg.caller.sdp is not None:
            out["caller_sdp"] = dlg.caller.sdp
        callee: dict[str, Any] = {
            "callee_tag": dlg.callee.tag or "",
            "callee_contact": dlg.callee.contact,
            "caller_cseq": str(dlg.caller.cseq),
            "callee_route_set": "",
            "callee_bind_addr": timings.BIND_ADDR,
        }
        if dlg.callee.sdp is not None:
            callee["callee_sdp"] = dlg.callee.sdp
        # no callee leg until a reply with a To tag came back: a dialog
        # rejected by the script's t_reply(404) lists none
        # (3.4/c_click_to_dial_transfer_unknown_user.jsonl, dlg_list id 6)
        out["CALLEES"] = [callee] if dlg.callee.tag is not None else []
        if ctx:
            out["context"] = {}
        return out

    def _cmd_dlg_list(self, params: dict[str, Any], respond: Respond, ctx: bool = False) -> Any:
        """
        C{dlg_list} / C{dlg_list_ctx} (3.4/i_dlg_list.jsonl): all ->
        C{{"Dialogs": [...]}}, C{callid} -> C{{"Dialog": {...}}} or 404 "No
        such dialog", C{index}/C{counter} -> C{{"count": N, "Dialogs": [...]}}.
        Deleted dialogs stay listed for a while.
        """
        callid = param_str(params, "callid")
        if callid is not None:
            from_tag = param_str(params, "from_tag")
            for dlg in self._emu._listed():
                if dlg.callid == callid and (from_tag is None or dlg.caller.tag == from_tag):
                    return {"Dialog": self.dialog_json(dlg, ctx)}
            raise MIError(404, "No such dialog")
        listed = self._emu._listed()
        if "index" in params:
            index = param_int(params, "index") or 0
            counter = param_int(params, "counter") or 0
            return {
                "count": len(listed),
                "Dialogs": [self.dialog_json(d, ctx) for d in listed[index : index + counter]],
            }
        return {"Dialogs": [self.dialog_json(d, ctx) for d in listed]}

    def _cmd_end_dlg(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{dlg_end_dlg dialog_id=<Call-ID or ID> [extra_hdrs]}
        (3.4/g_dlg_end_dlg.jsonl): "OK", then BYE both ways and E_DLG 4->5;
        an early dialog is CANCELled (2->5); unknown/ended -> 404 "Requested
        Dialog not found".
        """
        key = param_str(params, "dialog_id") or ""
        dlg = self._emu._find_dialog(key)
        if dlg is None:
            raise MIError(404, "Requested Dialog not found")
        steps: list[tuple[float, Callable[[], None]]] = [(timings.END_REPLY_MS, lambda: respond.result("OK"))]
        if dlg.invite_chain is not None and dlg.state < 3:
            dlg.invite_chain.cancel()
            dlg.invite_chain = None
            steps.append((timings.END_EARLY_EVENT_MS, lambda: self._emu._end_dialog(dlg)))
            # a click-to-dial INVITE still waiting for its answer gets 487
            waiting = self._emu._uac.waiting_finals(dlg)
            for on_final in waiting:
                steps.append(
                    (timings.END_EARLY_EVENT_MS, partial(on_final, Final(487, "487 Request Terminated")))
                )
            # not traced: a proxied INVITE (e.g. a transfer's new call) that
            # is CANCELled ends with the callee's 487, which callops reports
            # as E_CALL_TRANSFER fail (as for any final reply >= 300)
            if not waiting and dlg.invite_final is not None:
                steps.append(
                    (
                        timings.END_EARLY_EVENT_MS,
                        partial(dlg.invite_final, Final(487, "487 Request Terminated")),
                    )
                )
            dlg.invite_final = None
        else:
            steps.append((timings.END_EVENT_MS, lambda: self._emu._end_dialog(dlg)))
        self._emu._sched.chain(f"end_dlg {dlg.callid}", steps)
        return ASYNC
