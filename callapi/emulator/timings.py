"""
The OpenSIPS emulator's trace-derived timings and fixed values.

All timings are milliseconds (C{_MS}) or seconds (C{_S}) measured in the
traces under C{../shared/opensips-traces/{3.4,4.0}}; the comment of each
constant names the trace.  The emulator multiplies the millisecond ones by
its C{delay_scale} when it schedules them.
"""

from __future__ import annotations

#: A phone's INVITE reaches OpenSIPS this long after it dials
#: (3.4/f_hold_unhold.wire.txt: NOTE "alice dials" 521.7, INVITE at 522.4).
DIAL_MS = 0.7

#: Call-related timings per user-agent flavour.
#:  - ring: OpenSIPS relays the INVITE -> 180 -> E_DLG 1->2
#:    (baresip 3.4/a_click_to_dial_success.jsonl +1.3..2.3;
#:    linphone 3.4/d_blind_transfer_callee_success_linphone.jsonl +7.8 and
#:    3.4/a_click_to_dial_success_linphone.jsonl +17.5;
#:    sipp 3.4/f_hold_early_and_click_to_dial.jsonl +1.4)
#:  - answer: 180 -> 200 (E_DLG 2->3) for auto-answer (baresip +0.4 in
#:    3.4/f_hold_unhold.jsonl; linphone +1.1..1.9)
#:  - ack: 200 -> ACK from this UA as the *calling* side (E_DLG 3->4):
#:    baresip +0.8 (3.4/f_hold_unhold.jsonl), linphone ~+50
#:    (3.4/a_click_to_dial_success_linphone.jsonl +47.5,
#:    3.4/e_attended_transfer.jsonl +46, ..._callee_success_linphone +66)
#:  - reinvite: hold re-INVITE -> 200 (E_CALL_HOLD ok after start):
#:    baresip +0.9 (3.4/f_hold_unhold.jsonl), sipp +0.6
#:    (3.4/f_hold_early_and_click_to_dial.jsonl)
#:    sipp C{slow} answers 3004.5 ms after its 180 (C{answer_delay} 3 s plus
#:    4.5 ms: 3.4/f_hold_early_and_click_to_dial.jsonl +3004.9,
#:    3.4/b_click_to_dial_pass_provisional_replies.jsonl +3004.3)
#:  - bye: BYE -> 200 sent to this UA, as seen in the t_uac_dlg result
#:    (baresip +0.7 3.4/a_click_to_dial_bye_variants.jsonl, linphone +8.8
#:    3.4/a_click_to_dial_success_linphone.jsonl, +2.5 in the 4.0 one)
UA_TIMING: dict[str, dict[str, float]] = {
    "baresip": {"ring": 1.3, "answer": 0.4, "ack": 0.8, "reinvite": 0.9, "bye": 0.7},
    "linphone": {"ring": 10.0, "answer": 1.5, "ack": 50.0, "reinvite": 1.0, "bye": 5.5},
    "sipp": {"ring": 1.4, "answer": 4.5, "ack": 0.6, "reinvite": 0.6, "bye": 0.7},
}

#: OpenSIPS' own UAC (click-to-dial caller leg) ACKs a 2xx at once
#: (3.4/a_click_to_dial_next_hop.jsonl: 2->3 +1.4, 3->4 +1.7).
LOCAL_ACK_MS = 0.3

#: The t_uac_dlg MI reply leaves right after the 2xx (3.4/i_dlg_list.jsonl:
#: 2->3 +1.8, reply +1.8; 3->4 "often after the reply" per 3.4/README.md).
UAC_REPLY_MS = 0.1

#: Script C{t_reply(404, "User Not Found")} for unknown users
#: (3.4/b_click_to_dial_unknown_user.jsonl: reply +1.0, E_DLG 1->5 +1.1).
UNKNOWN_USER_MS = 1.0

#: A rejecting UA (sipp C{busy}) answers 486 this long after its 180
#: (3.4/b_click_to_dial_busy.jsonl: 1->2 +1.3, 2->5 +505.9).
BUSY_MS = 504.6

#: Nothing listens: the proxied branch times out after fr_timeout and tm
#: answers 408 itself, E_DLG 1->5 (3.4/b_click_to_dial_offline.jsonl +5497;
#: 4.0/README.md "offline ~5.0 s").
OFFLINE_MS = {"3.4": 5497.2, "4.0": 5000.0}

#: Ringing forever: fr_inv_timeout (120 s) ends the transaction, E_DLG 2->5
#: and a locally generated 408 without Message
#: (3.4/b_click_to_dial_noanswer.jsonl +119463; 4.0/README.md "~120.6-120.9 s").
NOANSWER_MS = {"3.4": 119463.0, "4.0": 120700.0}

#: A UA's BYE reaches OpenSIPS -> E_DLG 4->5
#: (3.4/a_click_to_dial_success.jsonl: NOTE "bob hangs up" 2535.6, event 2536.6).
HANGUP_MS = 0.9

#: A ringing caller's CANCEL -> E_DLG 2->5 (3.4/i_dlg_list.wire.txt: CANCEL
#: from alice at 3031.5, event at 3033.3).
CANCEL_MS = 1.8

#: dlg_end_dlg: reply, then E_DLG 4->5 (3.4/g_dlg_end_dlg.jsonl id 5: reply
#: +0.6, event +1.0); early dialog: CANCEL to the callee, 2->5 at +2.1 (id 12).
END_REPLY_MS = 0.5
END_EVENT_MS = 1.0
END_EARLY_EVENT_MS = 2.1

#: t_uac_cancel: "OK" at once, E_DLG 2->5 +2.4; the cancelled t_uac_dlg still
#: gets C{408} after fr_inv_timeout (3.4/b_click_to_dial_cancel.jsonl: the
#: INVITE's reply came 120132 ms after it was sent).
UAC_CANCEL_EVENT_MS = 2.4
UAC_CANCEL_408_MS = 120132.0

#: BYE through the proxy (t_uac_dlg with next_hop/Route): E_DLG 4->5 +0.3,
#: reply +0.7 (3.4/a_click_to_dial_bye_variants.jsonl id 9).
PROXY_BYE_EVENT_MS = 0.3

#: Request to a contact where nothing answers: tm's fr_timeout.
NO_ANSWER_NON_INVITE_MS = 5000.0

# --- call_hold / call_unhold (callops) -------------------------------------
#: hold: E_CALL_HOLD start for the first leg +0.4, second +0.9, MI reply
#: +1.6 (3.4/f_hold_unhold.jsonl id 4).
HOLD_START_MS = (0.4, 0.9)
HOLD_REPLY_MS = 1.6
#: unhold: starts +1.0/+1.1 (callee first), reply +1.4, oks +0.5 after their
#: start (3.4/f_hold_unhold.jsonl id 6).
UNHOLD_START_MS = (1.0, 1.1)
UNHOLD_REPLY_MS = 1.4
UNHOLD_ANSWER_MS = 0.5
#: The leg that is OpenSIPS itself answers 488 (route[local_end]) once the
#: looped re-INVITE went through a SIP worker
#: (3.4/f_hold_early_and_click_to_dial.jsonl id 9: caller start +0.8, its
#: fail +1.4, after the callee's start +1.3).
LOCAL_REINVITE_MS = 0.6
#: 4.0: re-INVITE made malformed by C{headers} without CRLF gets no answer,
#: C{fail} after tm's timeout (4.0/f_hold_per_leg.jsonl id 26: +4467).
MALFORMED_REINVITE_MS = 4467.0
#: 4.0: overlapping holds confuse the ACK's CSeq, the UAs retransmit their
#: 200 and each retransmission raises another C{ok}
#: (4.0/f_hold_per_leg.jsonl ids 28/29: +500, +1500, +3500 after the ok).
RETRANSMIT_OK_MS = (500.0, 1500.0, 3500.0)

# --- call_transfer (callops) -----------------------------------------------
#: "Accepted" goes out as soon as the REFER is sent
#: (3.4/d_blind_transfer_*.jsonl: +0.4..1.2).
TRANSFER_REPLY_MS = 0.6
#: baresip: NOTIFY(100) at once (answered 480 by callops), INVITE with
#: C{;osid} reaches OpenSIPS -> E_CALL_TRANSFER start +2.0
#: (3.4/a_click_to_dial_success.jsonl), then its BYE of the old call, E_DLG
#: 4->5 +2.8 (same trace; 3.4/c_click_to_dial_transfer_rejected.jsonl +2.6).
BARESIP_INVITE_MS = 2.0
BARESIP_BYE_MS = 2.8
#: baresip lost the NOTIFY race: BYE first (+1.9), then the unlinked INVITE
#: (3.4/d_blind_transfer_caller_success.jsonl: 4->5 +1.9, new 1->2 +3.4).
LOST_RACE_BYE_MS = 1.9
LOST_RACE_INVITE_MS = 2.1
#: baresip without the Replaces header (attended; 3.4/e_attended_transfer_baresip.jsonl:
#: new 1->2 +1.5, BYE of call1 +4.5).
NO_REPLACES_INVITE_MS = 0.3
NO_REPLACES_BYE_MS = 4.5
#: linphone: re-INVITE of the current call, then the INVITE to the target:
#: start +15.0 blind (3.4/d_blind_transfer_callee_success_linphone.jsonl,
#: +16.8 in 3.4/a_click_to_dial_success_linphone.jsonl), +7.7 attended
#: (3.4/e_attended_transfer.jsonl); NOTIFY 100 Trying ~25 ms after the
#: INVITE (+42.6 / +32.7 in the same traces), the final NOTIFY ~45 ms after
#: the final answer (+89.6 blind ok, +43.5 attended ok,
#: 4.0/d_blind_transfer_retry_after_fail.jsonl +9.2 after fail).
LINPHONE_INVITE_MS = 15.0
LINPHONE_ATTENDED_INVITE_MS = 7.7
LINPHONE_NOTIFY_TRYING_MS = 25.0
LINPHONE_NOTIFY_FINAL_MS = 45.0
#: linphone honours Replaces slower than a fresh call (E_DLG 2->3 of the new
#: call +27 after its INVITE, 3.4/e_attended_transfer.jsonl) and BYEs the
#: replaced call right after its 180 (+0.5, same trace).
REPLACES_ANSWER_MS = 27.0
REPLACES_BYE_MS = 0.5
#: Harness knob C{$shv(notify_delay_ms)} (3.4/README.md): baresip's NOTIFYs
#: reach callops late and are matched: 100 Trying at REFER+1.7+delay, the
#: final one at final+300+delay on success, final+delay on failure
#: (3.4/d_blind_transfer_callee_success_notify_delay.jsonl,
#: 3.4/c_click_to_dial_transfer_rejected_notify_delay.jsonl).
BARESIP_NOTIFY_MS = 1.7
BARESIP_NOTIFY_OK_MS = 300.0
#: A phone's INVITE for an unknown user is rejected by the script at once
#: (3.4/c_click_to_dial_transfer_unknown_user.jsonl: start +1.5, 1->5 +1.6).
TRANSFER_UNKNOWN_USER_MS = 0.1
#: Unknown transfer target: callops' events precede "Accepted"
#: (3.4/c_click_to_dial_transfer_unknown_user.jsonl: start +1.5, 1->5 +1.6,
#: fail +1.7, reply +1.8, old call 4->5 +2.2).
UNKNOWN_TARGET_START_MS = 1.5

#: Deleted dialogs stay in dlg_list for a while (3.4/e_attended_transfer.jsonl:
#: still listed 3.5 s after 4->5; gone after 16 s in
#: 3.4/d_blind_transfer_caller_success.jsonl).
DELETED_LINGER_S = 10.0

#: dialog module default_timeout (3.4/README.md, C{timeout = timestart + 43200}).
DIALOG_TIMEOUT_S = 43200

OPENSIPS_SIP = "127.0.0.1:5060"
BIND_ADDR = "udp:127.0.0.1:5060"

SERVER_HEADER = {
    "3.4": "OpenSIPS (3.4.18 (x86_64/linux))",
    "4.0": "OpenSIPS (4.0.1 (x86_64/linux))",
}
