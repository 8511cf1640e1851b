"""
The emulator's tm UAC: C{t_uac_dlg} (click-to-dial INVITEs looped through
the proxy, and in-dialog requests such as BYE) and C{t_uac_cancel}.

Traces followed (under C{../shared/opensips-traces}): C{3.4/README.md}
"t_uac_dlg", C{3.4/h_errors.jsonl} ids 3-7 (validation),
C{3.4/a_click_to_dial_success.jsonl} (result shape, 481 from a phone),
C{3.4/b_click_to_dial_*.jsonl} (failures, C{pass_provisional_replies},
C{t_uac_cancel}), C{3.4/a_click_to_dial_bye_variants.jsonl} (BYE straight to
the phone or through the proxy), C{4.0/which_and_meta.jsonl} id 40.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attr

from callapi.emulator import sip, timings
from callapi.emulator.invite import Final
from callapi.emulator.mi_table import ASYNC, Handler, MIError, Respond, param_int, param_str
from callapi.emulator.sip import Dialog, Phone

if TYPE_CHECKING:
    from callapi.emulator.core import OpenSIPSEmulator


def _parse_headers(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if ":" in line:
            name, value = line.split(":", 1)
            out.append((name.strip(), value.strip()))
    return out


def _header(headers: list[tuple[str, str]], *names: str) -> str | None:
    wanted = {n.lower() for n in names}
    for name, value in headers:
        if name.lower() in wanted:
            return value
    return None


def _tag_of(value: str) -> str | None:
    for part in value.split(";")[1:]:
        if part.strip().lower().startswith("tag="):
            return part.strip()[4:]
    return None


@attr.s(auto_attribs=True, eq=False)
class _PendingInvite:
    """A click-to-dial INVITE whose final answer is not yet reported.

    @ivar t0: clock seconds when t_uac_dlg was received.
    """

    dialog: Dialog
    t0: float
    on_final: Callable[[Final], None]
    done: bool = False


class UAC:
    """
    C{t_uac_dlg} and C{t_uac_cancel}; pending INVITEs by (Call-ID, CSeq).

    @param emu: the emulator whose dialog table, phones and scheduler it uses.
    """

    def __init__(self, emu: OpenSIPSEmulator) -> None:
        self._emu = emu
        self._pending: dict[tuple[str, int], _PendingInvite] = {}

    def forget(self) -> None:
        """Drop every pending INVITE (an OpenSIPS restart: transactions die
        with the process, their MI replies never come)."""
        self._pending.clear()

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {"tm:uac_dlg": self._cmd_uac_dlg, "tm:uac_cancel": self._cmd_uac_cancel}

    def waiting_finals(self, dlg: Dialog) -> list[Callable[[Final], None]]:
        """Who hears the final answer of C{dlg}'s click-to-dial INVITE, if
        t_uac_dlg is still waiting for it (for C{dlg_end_dlg})."""
        return [p.on_final for p in list(self._pending.values()) if p.dialog is dlg and not p.done]

    def _cmd_uac_dlg(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{t_uac_dlg} (3.4/README.md "t_uac_dlg"; validation from
        3.4/h_errors.jsonl ids 3-7).  INVITEs are click-to-dial calls looped
        through the proxy (the dialog's caller leg is OpenSIPS itself,
        3.4/a_click_to_dial_success.jsonl); other methods are in-dialog
        requests (3.4/a_click_to_dial_bye_variants.jsonl).
        """
        method = (param_str(params, "method") or "").upper()
        ruri = param_str(params, "ruri") or ""
        headers_text = param_str(params, "headers") or ""
        next_hop = param_str(params, "next_hop")
        body = param_str(params, "body")
        if not sip.valid_sip_uri(ruri):
            raise MIError(400, "Invalid ruri")
        if next_hop is not None and not sip.valid_sip_uri(next_hop):
            raise MIError(400, "Invalid next_hop")
        headers = _parse_headers(headers_text)
        from_hdr = _header(headers, "From", "f")
        to_hdr = _header(headers, "To", "t")
        if from_hdr is None:
            raise MIError(400, "From missing")
        if to_hdr is None:
            raise MIError(400, "To missing")
        cseq_hdr = _header(headers, "CSeq")
        cseq = 1
        if cseq_hdr is not None:
            parts = cseq_hdr.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise MIError(400, "Invalid CSeq")
            if parts[1].upper() != method:
                raise MIError(400, "CSeq method mismatch")
            cseq = int(parts[0])
        if body and _header(headers, "Content-Type", "c") is None:
            raise MIError(400, "Content-Type missing")
        if body and _header(headers, "Content-Length", "l") is not None:
            raise MIError(400, "Content-Length not allowed")
        ids = self._emu._ids
        callid = _header(headers, "Call-ID", "Call-Id", "i") or f"{ids.hex(8)}-{ids.hex(4)}@127.0.0.1"
        if method == "INVITE":
            self._invite(
                respond,
                ruri=ruri,
                from_hdr=from_hdr,
                to_hdr=to_hdr,
                contact=_header(headers, "Contact", "m"),
                callid=callid,
                cseq=cseq,
                body=body,
            )
        else:
            via_proxy = next_hop is not None or _header(headers, "Route") is not None
            self._request(
                respond,
                method=method,
                ruri=ruri,
                callid=callid,
                via_proxy=via_proxy,
                from_hdr=from_hdr,
                to_hdr=to_hdr,
                cseq=cseq,
            )
        return ASYNC

    def _message(self, dlg: Dialog, final: Final, *, method: str = "INVITE", cseq: int = 1) -> str:
        """A plausible C{Message} (reply headers + body, no status line)."""
        emu = self._emu
        phone = dlg.callee.phone
        lines = []
        if final.code < 300 and method == "INVITE":
            lines.append(f"Record-Route: <sip:127.0.0.1;lr;did={dlg.dialog_id}>")
        lines.append(f"Via: SIP/2.0/UDP {timings.OPENSIPS_SIP};branch={emu._ids.branch()}")
        to_tag = dlg.callee.tag or ("bcaa-" + emu._ids.hex(32))
        lines.append(f"To: <{dlg.to_uri}>;tag={to_tag}")
        lines.append(f"From: <{dlg.from_uri}>;tag={dlg.caller.tag}")
        lines.append(f"CSeq: {cseq} {method}")
        lines.append(f"Call-ID: {dlg.callid}")
        if final.local:
            lines.append(f"Server: {timings.SERVER_HEADER[emu.version]}")
        elif phone is not None and phone.ua == "baresip":
            lines.append("Server: baresip v1.0.0 (x86_64/linux)")
        body = ""
        if final.code < 300 and method == "INVITE" and phone is not None:
            lines.append(f"Contact: <{dlg.callee.contact}>")
            lines.append("Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,REFER")
            body = dlg.callee.sdp or ""
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode('utf-8'))}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _invite(
        self,
        respond: Respond,
        *,
        ruri: str,
        from_hdr: str,
        to_hdr: str,
        contact: str | None,
        callid: str,
        cseq: int,
        body: str | None,
    ) -> None:
        """
        A click-to-dial INVITE: the dialog's callee is the phone named by the
        R-URI user, its caller leg OpenSIPS' own UAC.  Result shapes from
        3.4/a_click_to_dial_success.jsonl (2xx: Status, RURI, Next-hop, Routes,
        Message), 3.4/b_click_to_dial_*.jsonl (failures: Status + Message; a
        local timeout: Status only); 18x replies only with
        C{pass_provisional_replies} (3.4/b_click_to_dial_pass_provisional_replies).
        """
        emu = self._emu
        emu._purge_deleted()
        dlg = emu._new_dialog(
            callid,
            caller_uri=sip.strip_uri(from_hdr),
            caller_phone=None,
            caller_contact=sip.strip_uri(contact) if contact else "",
            caller_tag=_tag_of(from_hdr) or emu._ids.local_tag(),
            callee_uri=sip.strip_uri(to_hdr),
            callee_user=sip.user_of(ruri),
        )
        dlg.click_to_dial = True
        dlg.caller.cseq = cseq
        dlg.caller.sdp = body
        key = (callid, cseq)

        def on_final(final: Final) -> None:
            if pending.done:
                return
            pending.done = True
            self._pending.pop(key, None)
            if final.code < 300:
                did = dlg.dialog_id
                respond.result(
                    {
                        "Status": final.status,
                        "RURI": dlg.callee.contact,
                        "Next-hop": f"sip:127.0.0.1;lr;did={did}",
                        "Routes": [f"<sip:127.0.0.1;lr;did={did}>"],
                        "Message": self._message(dlg, final, cseq=cseq),
                    }
                )
            elif final.message:
                respond.result({"Status": final.status, "Message": self._message(dlg, final, cseq=cseq)})
            else:
                respond.result({"Status": final.status})

        def on_ringing() -> None:
            if emu.pass_provisional_replies and not pending.done:
                respond.result(
                    {
                        "Status": "180 Ringing",
                        "Message": self._message(dlg, Final(180, "180 Ringing"), cseq=cseq),
                    }
                )

        pending = _PendingInvite(dlg, emu.clock.seconds(), on_final)
        self._pending[key] = pending
        emu._invites.route(
            dlg, start_ms=0.0, ack_ms=timings.LOCAL_ACK_MS, on_final=on_final, on_ringing=on_ringing
        )

    def _request(
        self,
        respond: Respond,
        *,
        method: str,
        ruri: str,
        callid: str,
        via_proxy: bool,
        from_hdr: str,
        to_hdr: str,
        cseq: int,
    ) -> None:
        """
        A non-INVITE t_uac_dlg (the Go Call API's BYE,
        3.4/a_click_to_dial_bye_variants.jsonl): straight to the R-URI the
        phone answers 200 if it still has the call, else 481 ("Call Does Not
        Exist", 3.4/a_click_to_dial_success.jsonl id 6) and the OpenSIPS
        dialog is untouched (stale); through the proxy (C{next_hop} or a
        C{Route} header) a BYE also ends the dialog (E_DLG 4->5).
        """
        emu = self._emu
        dlg = emu.dialogs.get(callid)
        leg = None
        if dlg is not None:
            for candidate in (dlg.callee, dlg.caller):
                if candidate.contact and candidate.contact == ruri:
                    leg = candidate
                    break
            if leg is None:
                user = sip.user_of(ruri)
                for candidate in (dlg.callee, dlg.caller):
                    if candidate.phone_uri and sip.user_of(candidate.phone_uri) == user:
                        leg = candidate
                        break
        phone = leg.phone if leg is not None else self._phone_by_contact(ruri)
        steps: list[tuple[float, Callable[[], None]]] = []
        if phone is None:
            # nothing answers there: tm's fr_timeout, a local 408
            steps.append(
                (timings.NO_ANSWER_NON_INVITE_MS, lambda: respond.result({"Status": "408 Request Timeout"}))
            )
            emu._sched.chain(f"uac {method} {callid}", steps)
            return
        reply_ms = phone.timing["bye"]
        has_call = leg is not None and leg.alive and dlg is not None
        if via_proxy and method == "BYE" and dlg is not None and dlg.active:
            d = dlg
            steps.append((timings.PROXY_BYE_EVENT_MS, lambda: emu._end_dialog(d)))
        if has_call:
            status = "200 Ok" if phone.ua == "linphone" else "200 OK"
            if method == "BYE":
                assert leg is not None
                leg.alive = False
        else:
            status = "481 Call Does Not Exist"

        def send() -> None:
            msg = (
                self._message(dlg, Final(int(status.split()[0]), status), method=method, cseq=cseq)
                if dlg is not None
                else f"Call-ID: {callid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            )
            respond.result({"Status": status, "Message": msg})

        steps.append((reply_ms, send))
        emu._sched.chain(f"uac {method} {callid}", steps)

    def _phone_by_contact(self, uri: str) -> Phone | None:
        for user, (_, phone) in self._emu._phones.items():
            if phone.contact_for(user) == uri:
                return phone
        return None

    def _cmd_uac_cancel(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{t_uac_cancel callid cseq} (3.4/b_click_to_dial_cancel.jsonl): "OK"
        at once, the callee is CANCELled (2->5), but the looped 487 never
        reaches the local transaction: the t_uac_dlg request gets
        C{{"Status": "408 Request Timeout"}} after fr_inv_timeout.  Unknown
        -> 481 "No such transaction" (4.0/which_and_meta.jsonl id 40).
        """
        emu = self._emu
        callid = param_str(params, "callid") or ""
        cseq = param_int(params, "cseq") or 0
        pending = self._pending.get((callid, cseq))
        if pending is None or pending.done:
            raise MIError(481, "No such transaction")
        dlg = pending.dialog
        if dlg.invite_chain is not None:
            dlg.invite_chain.cancel()
            dlg.invite_chain = None
        elapsed_ms = (emu.clock.seconds() - pending.t0) * 1000.0
        emu._sched.chain(
            f"uac_cancel {callid}",
            [
                (timings.UAC_CANCEL_EVENT_MS, lambda: emu._end_dialog(dlg)),
                (
                    max(timings.UAC_CANCEL_EVENT_MS, timings.UAC_CANCEL_408_MS - elapsed_ms),
                    lambda: pending.on_final(Final(408, "408 Request Timeout", local=True, message=False)),
                ),
            ],
        )
        return "OK"
