"""
The emulator's callops transfer: C{call_transfer}, blind (C{destination})
or attended (C{transfer_callid}/C{transfer_leg}), and the REFER flow that
follows it: how the transferee phone reacts (L{Phone.refer}), its NOTIFYs,
the new call it makes, and the E_CALL_TRANSFER events callops raises.

Traces followed (under C{../shared/opensips-traces}):
C{3.4/d_blind_transfer_*.jsonl}, C{3.4/e_attended_transfer*.jsonl},
C{3.4/c_click_to_dial_transfer_*.jsonl}, C{3.4/README.md}
"E_CALL_TRANSFER", C{4.0/d_blind_transfer_retry_after_fail.jsonl},
C{4.0/e_attended_transfer_errors.jsonl}, C{4.0/README.md}.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from callapi.emulator import sip, timings
from callapi.emulator.invite import Final
from callapi.emulator.mi_table import (
    ASYNC,
    Handler,
    MIError,
    Respond,
    invalid_params,
    param_str,
    server_error,
)
from callapi.emulator.sip import Dialog, Leg

if TYPE_CHECKING:
    from callapi.emulator.core import OpenSIPSEmulator


class Transfers:
    """
    C{call_transfer}: validates the request and starts one L{_Transfer}.

    @param emu: the emulator whose dialogs, phones and scheduler it uses.
    """

    def __init__(self, emu: OpenSIPSEmulator) -> None:
        self._emu = emu

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {"callops:transfer": self._cmd_transfer}

    def _cmd_transfer(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{call_transfer} (callops), blind (C{destination}) or attended
        (C{transfer_callid}, C{transfer_leg}).  "Accepted" as soon as the
        REFER is sent; the outcome only as E_CALL_TRANSFER events, whose
        shape depends on the transferee's L{Phone.refer}
        (3.4/d_blind_transfer_*.jsonl, 3.4/e_attended_transfer*.jsonl,
        3.4/c_click_to_dial_transfer_*.jsonl).  Errors: 404 "Dialog not
        found", 404 "Transfer dialog not found", 491 "Request Pending" while
        one runs and after one ended (4.0/d_blind_transfer_retry_after_fail),
        a bad C{leg} (C{both} included) -32602 on 3.4 / -32000 on 4.0
        (3.4/d_blind_transfer_errors.jsonl id 5, 4.0/README.md), a bad
        C{transfer_leg} -32000, the C{transfer_fromtag} recipe -32000 (it
        reads C{destination}, 4.0/e_attended_transfer_errors.jsonl id 14).
        """
        emu = self._emu
        if "transfer_fromtag" in params:
            raise server_error()
        callid = param_str(params, "callid") or ""
        leg_name = param_str(params, "leg")
        if leg_name not in ("caller", "callee"):
            if emu.version == "4.0":
                raise server_error()
            raise invalid_params("Bad type for parameter 'leg'")
        attended = "transfer_callid" in params
        tleg_name = None
        if attended:
            tleg_name = param_str(params, "transfer_leg")
            if tleg_name not in ("caller", "callee"):
                raise server_error()
        dlg2 = None
        if attended:
            # callops looks the transfer dialog up first (callops.c,
            # mi_call_attended_transfer)
            dlg2 = emu.dialogs.get(param_str(params, "transfer_callid") or "")
            if dlg2 is None or not dlg2.active:
                raise MIError(404, "Transfer dialog not found")
        dlg = emu.dialogs.get(callid)
        if dlg is None or not dlg.active:
            raise MIError(404, "Dialog not found")
        if dlg.transfer is not None:
            raise MIError(491, "Request Pending")
        destination = param_str(params, "destination")
        if destination is None:
            assert dlg2 is not None and tleg_name is not None
            destination = dlg2.to_uri if tleg_name == "callee" else dlg2.from_uri
        dlg.transfer = "running"
        transferee = dlg.leg(leg_name)
        dlg.other(leg_name).cseq += 1  # the REFER continues the other side's CSeq
        _Transfer(emu, dlg, leg_name, transferee, destination, respond, dlg2=dlg2, tleg_name=tleg_name).run()
        return ASYNC


class _Transfer:
    """
    One call_transfer in flight: the transferee's reaction to the REFER and
    the E_CALL_TRANSFER events callops raises for it.
    """

    def __init__(
        self,
        emu: OpenSIPSEmulator,
        dlg: Dialog,
        leg_name: str,
        transferee: Leg,
        destination: str,
        respond: Respond,
        *,
        dlg2: Dialog | None,
        tleg_name: str | None,
    ) -> None:
        self.emu = emu
        self.dlg = dlg
        self.leg_name = leg_name
        self.transferee = transferee
        self.destination = destination
        self.respond = respond
        self.dlg2 = dlg2
        self.tleg_name = tleg_name
        self.new: Dialog | None = None
        self.ended = False
        self.reply_after_final: Callable[[], None] | None = None
        self.chain = emu._sched.chain(f"transfer {dlg.callid}")

    @property
    def attended(self) -> bool:
        return self.dlg2 is not None

    def run(self) -> None:
        """Schedule the transferee's reaction to the REFER (see L{Phone.refer})."""
        phone = self.transferee.phone
        emu = self.emu

        def reply() -> None:
            self.respond.result("Accepted")

        if phone is None or not self.transferee.alive or phone.refer == "reject" or self.dlg.state < 3:
            # REFER refused (501, or an early dialog: not traced) or never
            # answered: nothing but "Accepted"
            # (3.4/d_blind_transfer_refer_rejected.jsonl)
            self.chain.add(timings.TRANSFER_REPLY_MS, reply)
            return
        mode = phone.refer
        if mode == "baresip" and not self.attended and emu._shv.notify_delay <= 0 and emu._dice.notify_race():
            # fault injection: this baresip's BYE beats its INVITE as in
            # 3.4/d_blind_transfer_caller_success.jsonl (3.4/README.md
            # "The NOTIFY race"): no E_CALL_TRANSFER, the new call connects
            emu._log.info(
                "transfer {callid}: baresip loses the NOTIFY race (fault injection)", callid=self.dlg.callid
            )
            mode = "lost_race"
        if mode == "lost_race" or (self.attended and mode == "baresip"):
            # 3.4/d_blind_transfer_caller_success.jsonl (BYE first, INVITE
            # not linked) and 3.4/e_attended_transfer_baresip.jsonl (no
            # Replaces header): a new call, no E_CALL_TRANSFER at all
            if mode == "lost_race":
                bye_ms, invite_ms = timings.LOST_RACE_BYE_MS, timings.LOST_RACE_INVITE_MS
            else:
                bye_ms, invite_ms = timings.NO_REPLACES_BYE_MS, timings.NO_REPLACES_INVITE_MS
            self.chain.add(timings.TRANSFER_REPLY_MS, reply)
            if phone.hangs_up_after_transfer or mode == "lost_race":
                self.chain.add(bye_ms, self._hangup_old)
            self.chain.add(invite_ms, lambda: self._new_call(linked=False))
            return
        delay = emu._shv.notify_delay
        target_known = sip.user_of(self.destination) in emu._phones
        if mode == "baresip":
            invite_ms = timings.BARESIP_INVITE_MS
            if not target_known:
                invite_ms = timings.UNKNOWN_TARGET_START_MS
            if delay > 0:
                self.chain.add(timings.BARESIP_NOTIFY_MS + delay, lambda: self._notify("100 Trying"))
            elif phone.hangs_up_after_transfer:
                self.chain.add(
                    timings.BARESIP_BYE_MS if target_known else timings.UNKNOWN_TARGET_START_MS + 0.7,
                    self._hangup_old,
                )
        else:  # linphone
            invite_ms = timings.LINPHONE_ATTENDED_INVITE_MS if self.attended else timings.LINPHONE_INVITE_MS
            self.chain.add(invite_ms + timings.LINPHONE_NOTIFY_TRYING_MS, lambda: self._notify("100 Trying"))
        if target_known:
            self.chain.add(timings.TRANSFER_REPLY_MS, reply)
        else:
            # 3.4/c_click_to_dial_transfer_unknown_user.jsonl: start and
            # fail precede "Accepted"
            self.reply_after_final = reply
        self.chain.add(invite_ms, lambda: self._new_call(linked=True))

    # -- steps ---------------------------------------------------------

    def _hangup_old(self) -> None:
        """baresip BYEs the transferred call (3.4/a_click_to_dial_success.jsonl)."""
        if self.dlg.active:
            self.emu._end_dialog(self.dlg)

    def _xfer(self, dlg: Dialog, leg: str, state: str, status: str, destination: str | None = None) -> None:
        assert self.new is not None
        self.emu._evi.raise_event(
            "E_CALL_TRANSFER",
            {
                "callid": dlg.callid,
                "leg": leg,
                "transfer_callid": self.new.callid,
                "destination": self.destination if destination is None else destination,
                "state": state,
                "status": status,
            },
        )

    def _notify(self, status: str) -> None:
        """C{notify}: only for the call that got the REFER; C{leg} empty once
        the transfer ended, C{destination} always empty
        (3.4/README.md "E_CALL_TRANSFER")."""
        if self.new is None:
            return
        self._xfer(self.dlg, "" if self.ended else self.leg_name, "notify", status, destination="")

    def _new_call(self, *, linked: bool) -> None:
        """
        The transferee's INVITE reaches OpenSIPS: a new dialog with a fresh
        Call-ID (the transferee's format) and, when callops links it, the
        C{start} event(s) (3.4/d_blind_transfer_callee_success.jsonl: C{leg}
        = the new Call-ID; 3.4/e_attended_transfer.jsonl: one per call-id).
        """
        emu = self.emu
        phone = self.transferee.phone
        assert phone is not None
        phone_uri = self.transferee.phone_uri or ""
        user = sip.user_of(phone_uri)
        # baresip keeps its identity in the old dialog (the click-to-dial
        # "To"), linphone uses its own AOR (3.4/a_click_to_dial_success*.jsonl)
        from_uri = self.transferee.uri if phone.ua == "baresip" else phone_uri
        to_uri = self.destination
        if not self.attended:
            to_uri = f"{self.destination};osid={self.dlg.dialog_id}"
        elif not linked and self.dlg2 is not None:
            # baresip cannot do Replaces: it puts the Refer-To's ?Replaces=
            # into the R-URI and copies it into To, with its separators
            # mangled (3.4/e_attended_transfer_baresip.jsonl, dlg_list id 6)
            d2 = self.dlg2
            near, far = (d2.callee, d2.caller) if self.tleg_name == "callee" else (d2.caller, d2.callee)
            to_uri = f"{self.destination}?Replaces={d2.callid}?to-tag?{near.tag}?from-tag?{far.tag}"
        callid = emu._ids.callid(phone.ua)
        new = emu._new_dialog(
            callid,
            caller_uri=from_uri,
            caller_phone=phone_uri,
            caller_contact=phone.contact_for(user),
            caller_tag=emu._ids.tag(phone.ua),
            callee_uri=to_uri,
            callee_user=sip.user_of(self.destination),
        )
        new.caller.cseq = 20 if phone.ua == "linphone" else emu._ids.cseq()
        self.new = new
        target = new.callee.phone
        answer_ms = None
        ring_extra = None
        if linked:
            if self.attended:
                assert self.dlg2 is not None and self.tleg_name is not None
                self._xfer(self.dlg, self.leg_name, "start", "")
                self._xfer(self.dlg2, self.tleg_name, "start", "")
                if target is not None and target.honours_replaces:
                    answer_ms = timings.REPLACES_ANSWER_MS
                    dlg2 = self.dlg2

                    def ring_extra() -> None:
                        # the target honours Replaces: BYE to the replaced call
                        emu._sched.chain(
                            f"replaces {dlg2.callid}",
                            [(timings.REPLACES_BYE_MS, partial(emu._hangup_if_active, dlg2))],
                        )
            else:
                # 3.4 and 4.0 blind transfers: C{leg} carries the new Call-ID
                self._xfer(self.dlg, callid, "start", "")
        emu._invites.route(
            new,
            start_ms=0.0,
            ack_ms=phone.timing["ack"],
            on_final=(self._final if linked else (lambda f: None)),
            answer_ms=answer_ms,
            on_ring_extra=ring_extra,
            unknown_ms=timings.TRANSFER_UNKNOWN_USER_MS,
        )

    def _final(self, final: Final) -> None:
        """
        The new call's final answer: C{ok} / C{fail} (twice for attended,
        call2 first, 3.4/e_attended_transfer.jsonl), then the transferee's
        final NOTIFY (linphone; baresip only with the notify-delay knob).
        """
        emu = self.emu
        self.ended = True
        self.dlg.transfer = "ended"
        state = "ok" if final.code < 300 else "fail"
        status = final.status
        destination = self.destination
        if final.local:
            # generated by OpenSIPS itself: always 408, destination keeps
            # ;osid= (3.4/c_click_to_dial_transfer_unknown_user.jsonl)
            status = "408 Request Timeout"
            destination = f"{self.destination};osid={self.dlg.dialog_id}"
        if self.attended:
            assert self.dlg2 is not None and self.tleg_name is not None
            self._xfer(self.dlg2, self.tleg_name, state, status, destination)
        self._xfer(self.dlg, self.leg_name, state, status, destination)
        if self.reply_after_final is not None:
            self.reply_after_final()
            self.reply_after_final = None
        phone = self.transferee.phone
        assert phone is not None
        if phone.refer == "linphone":
            sipfrag = "200 Ok" if state == "ok" else final.status
            emu._sched.chain(
                f"notify {self.dlg.callid}",
                [(timings.LINPHONE_NOTIFY_FINAL_MS, lambda: self._notify(sipfrag))],
            )
        elif emu._shv.notify_delay > 0:
            delay = emu._shv.notify_delay
            sipfrag = "200 OK" if state == "ok" else final.status
            wait = (timings.BARESIP_NOTIFY_OK_MS if state == "ok" else 0.0) + delay
            emu._sched.chain(f"notify {self.dlg.callid}", [(wait, lambda: self._notify(sipfrag))])
