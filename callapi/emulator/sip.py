"""
The SIP side of the OpenSIPS emulator: simulated phones, dialogs, identifiers
and the trace-derived timings.

Nothing here sends anything; L{callapi.emulator.core} drives it.  All
timings are milliseconds measured in the traces under
C{../shared/opensips-traces/{3.4,4.0}} (the docstring or comment of each
constant names the trace), multiplied by the emulator's C{delay_scale} when
scheduled.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import attr

# ---------------------------------------------------------------------------
# Timings (ms)
# ---------------------------------------------------------------------------

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

# ---------------------------------------------------------------------------
# Phones
# ---------------------------------------------------------------------------

_ANSWERS = ("auto", "busy", "noanswer", "offline")
_REFERS = ("baresip", "linphone", "reject", "lost_race")
_UAS = ("baresip", "linphone", "sipp")

#: What L{Phone.baresip}, L{Phone.linphone} and L{Phone.sipp} set unless told
#: otherwise (3.4/README.md "User agents").
_FLAVOURS: dict[str, dict[str, Any]] = {
    "baresip": {
        "ua": "baresip",
        "status": "200 Answering",
        "refer": "baresip",
        "hangs_up_after_transfer": True,
    },
    "linphone": {
        "ua": "linphone",
        "status": "200 Ok",
        "refer": "linphone",
        "hangs_up_after_transfer": False,
        "honours_replaces": True,
    },
    "sipp": {"ua": "sipp", "status": "200 OK", "refer": "reject", "hangs_up_after_transfer": False},
}


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Phone:
    """
    A simulated SIP user agent behind the emulated proxy.

    @ivar ua: wire flavour: C{"baresip"}, C{"linphone"} or C{"sipp"} (Contact
        and Call-ID formats, timings from L{UA_TIMING}).
    @ivar answer: how it answers an INVITE: C{"auto"} (180 then C{status}
        after C{answer_delay} seconds), C{"busy"} (180, then 486 Busy Here
        after 0.5 s), C{"noanswer"} (180 forever: OpenSIPS gives up after
        fr_inv_timeout, 120 s, with a local 408 without Message), C{"offline"}
        (nothing listens: local 408 with Message after ~5.1 s).
    @ivar status: the final status line of an auto answer, e.g.
        C{"200 Answering"} (baresip), C{"200 Ok"} (linphone), C{"200 OK"} (sipp).
    @ivar answer_delay: seconds between 180 and the answer (sipp C{slow}: 3).
    @ivar refer: what it does with a REFER: C{"baresip"} (202, NOTIFY before
        the INVITE, so callops answers it 480 and raises start/ok|fail only,
        no C{notify}; cannot do Replaces), C{"linphone"} (INVITE, then
        NOTIFYs 100 Trying and the final status; does Replaces),
        C{"reject"} (501 to the REFER: no event at all,
        3.4/d_blind_transfer_refer_rejected) or C{"lost_race"} (baresip
        whose BYE beat its INVITE: the new call is not linked, no event at
        all, 3.4/d_blind_transfer_caller_success).
    @ivar hold_ok: accepts hold re-INVITEs; C{False} answers 488, so that
        leg's E_CALL_HOLD state is C{fail}.
    @ivar hangs_up_after_transfer: BYEs the transferred call itself (baresip
        does, so a later dlg_end_dlg gets 404; linphone does not).
    @ivar honours_replaces: as a transfer target, ends the replaced call
        when an INVITE with Replaces arrives (linphone erin in
        3.4/e_attended_transfer).
    @ivar contact: Contact URI; derived from C{ua}, the user and C{port}
        when not given.
    @ivar port: the UA's SIP port on 127.0.0.1 (only used for C{contact}).
    """

    ua: str = "baresip"
    answer: str = "auto"
    status: str = "200 Answering"
    answer_delay: float = 0.0
    refer: str = "baresip"
    hold_ok: bool = True
    hangs_up_after_transfer: bool = True
    honours_replaces: bool = False
    contact: str | None = None
    port: int = 5070

    def __attrs_post_init__(self) -> None:
        if self.ua not in _UAS:
            raise ValueError(f"ua must be one of {_UAS}")
        if self.answer not in _ANSWERS:
            raise ValueError(f"answer must be one of {_ANSWERS}")
        if self.refer not in _REFERS:
            raise ValueError(f"refer must be one of {_REFERS}")

    @classmethod
    def baresip(cls, **kw: Any) -> Phone:
        """baresip 1.0.0 with C{answermode=auto} (3.4/README.md "User agents")."""
        return cls(**{**_FLAVOURS["baresip"], **kw})

    @classmethod
    def linphone(cls, **kw: Any) -> Phone:
        """linphonec 5.1.65, auto-answer (3.4/README.md "User agents")."""
        return cls(**{**_FLAVOURS["linphone"], **kw})

    @classmethod
    def sipp(cls, **kw: Any) -> Phone:
        """A sipp 3.6.1 UAS scenario (busy / noanswer / slow)."""
        return cls(**{**_FLAVOURS["sipp"], **kw})

    def contact_for(self, user: str) -> str:
        """The Contact URI this phone's UA writes for C{user}."""
        if self.contact:
            return self.contact
        if self.ua == "baresip":
            tag = zlib.crc32(user.encode()) % (1 << 40)
            return f"sip:{user}-0x{tag:x}00@127.0.0.1:{self.port}"
        if self.ua == "linphone":
            return f"sip:127.0.0.1:{self.port};transport=udp"
        return f"sip:{user}@127.0.0.1:{self.port};transport=UDP"

    @property
    def timing(self) -> dict[str, float]:
        """This UA's delays per SIP step, in seconds (L{UA_TIMING})."""
        return UA_TIMING[self.ua]


def default_phones() -> dict[str, Phone]:
    """
    The phones of the trace harness (3.4/README.md "OpenSIPS script"): users
    routed by R-URI user to fixed ports, with the Contacts seen in the 3.4
    traces.
    """
    return {
        "sip:alice@127.0.0.1": Phone.baresip(port=5071, contact="sip:alice-0x564a33827400@127.0.0.1:5071"),
        "sip:bob@127.0.0.1": Phone.baresip(port=5073, contact="sip:bob-0x558e493da400@127.0.0.1:5073"),
        "sip:cindy@127.0.0.1": Phone.baresip(port=5075, contact="sip:cindy-0x5638ba114400@127.0.0.1:5075"),
        "sip:dave@127.0.0.1": Phone.linphone(port=5077),
        "sip:erin@127.0.0.1": Phone.linphone(port=5079),
        "sip:busy@127.0.0.1": Phone.sipp(port=5081, answer="busy"),
        "sip:noanswer@127.0.0.1": Phone.sipp(port=5082, answer="noanswer"),
        "sip:slow@127.0.0.1": Phone.sipp(port=5083, answer_delay=3.0),
        "sip:offline@127.0.0.1": Phone.sipp(port=5089, answer="offline"),
    }


# ---------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------


def core_hash(text: str, size: int = 4096) -> int:
    """
    OpenSIPS' C{core_hash()} (hash_func.h) of a Call-ID, masked to the dialog
    hash table size (4096): the dialog's hash entry.  Verified against the
    traces: C{6c93c431e29d3500} -> 0xcfc (3.4/f_hold_unhold.jsonl, ID
    C{cfc.8e0edac7}); C{38bb11d20d700119} -> 0xd0a printed as C{a0d}.
    """
    data = text.encode("utf-8")
    mask = 0xFFFFFFFF

    def signed(b: int) -> int:  # C chars are signed on x86
        return b - 256 if b > 127 else b

    h = 0
    i = 0
    n = len(data)
    while i <= n - 4:
        v = (
            (signed(data[i]) << 24)
            + (signed(data[i + 1]) << 16)
            + (signed(data[i + 2]) << 8)
            + signed(data[i + 3])
        ) & mask
        h = (h + (v ^ (v >> 3))) & mask
        i += 4
    v = 0
    while i < n:
        v = ((v << 8) + signed(data[i])) & mask
        i += 1
    h = (h + (v ^ (v >> 3))) & mask
    h = ((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & mask
    return h & (size - 1)


def rev_hex(value: int) -> str:
    """C{int2reverse_hex()}: hex digits least significant first (the dialog ID
    C{a0d.3eac7013} has hash entry 0xd0a)."""
    if value == 0:
        return "0"
    out = []
    while value:
        out.append("0123456789abcdef"[value & 15])
        value >>= 4
    return "".join(out)


def parse_dialog_id(text: str) -> tuple[int, int] | None:
    """
    OpenSIPS' C{parse_dlg_did()} (modules/dialog/dlg_handlers.h) and
    C{reverse_hex2int()} (ut.h): C{"<hex>.<hex>"} split at the first C{"."}
    -> C{(h_entry, h_id)}, digits least significant first, either case,
    empty parts 0, 32-bit wrap; C{None} without a C{"."} or with a non-hex
    character.
    """
    entry_text, dot, id_text = text.partition(".")
    if not dot:
        return None
    values = []
    for part in (entry_text, id_text):
        value = 0
        for ch in reversed(part):
            if ch not in "0123456789abcdefABCDEF":
                return None
            value = ((value << 4) + int(ch, 16)) & 0xFFFFFFFF
        values.append(value)
    return values[0], values[1]


class IdFactory:
    """Random identifiers in the formats the traces show."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        #: tm's local From tags share one md5 prefix per OpenSIPS instance
        #: (C{533cb9e91f4b999cf76861cbb9ed54ed-4272}, 3.4/a_click_to_dial_success).
        self.local_tag_prefix = self.hex(32)
        self._entry_ids: dict[int, int] = {}

    def hex(self, n: int) -> str:
        """C{n} random lowercase hex digits."""
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def alnum(self, n: int, extra: str = "") -> str:
        """C{n} random letters and digits (and characters of C{extra})."""
        chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + extra
        return "".join(self.rng.choice(chars) for _ in range(n))

    def callid(self, ua: str) -> str:
        """baresip: 16 hex (C{6c93c431e29d3500}); linphone: 10 chars (C{9QUwW~qulz})."""
        if ua == "linphone":
            return self.alnum(10, "~-")
        if ua == "sipp":
            return f"{self.rng.randrange(1, 99999)}-{self.rng.randrange(1000, 99999)}@127.0.0.1"
        return self.hex(16)

    def tag(self, ua: str) -> str:
        """baresip: 16 hex; linphone: 7-9 chars; sipp: C{<n>SIPpTag0<m>}."""
        if ua == "linphone":
            return self.alnum(self.rng.randrange(7, 10), "~-")
        if ua == "sipp":
            return f"{self.rng.randrange(6800, 6899)}SIPpTag0{self.rng.randrange(10, 99)}"
        return self.hex(16)

    def local_tag(self) -> str:
        """A tag of the proxy's own (C{t_uac_dlg}): a fixed prefix, 4 random hex digits."""
        return f"{self.local_tag_prefix}-{self.hex(4)}"

    def cseq(self) -> int:
        """A random initial CSeq number."""
        return self.rng.randrange(100, 65000)

    def dialog_ids(self, callid: str) -> tuple[int, int]:
        """(hash entry, hash id); ids count up per entry from a random start."""
        entry = core_hash(callid)
        if entry not in self._entry_ids:
            self._entry_ids[entry] = self.rng.randrange(1, 1 << 31)
        self._entry_ids[entry] += 1
        return entry, self._entry_ids[entry]

    def branch(self) -> str:
        """A Via branch in the form OpenSIPS writes (C{z9hG4bK....0})."""
        return f"z9hG4bK{self.hex(4)}.{self.hex(8)}.0"


# ---------------------------------------------------------------------------
# Dialogs
# ---------------------------------------------------------------------------


@attr.s(auto_attribs=True, eq=False)
class Leg:
    """
    One side of a dialog.

    @ivar role: C{"caller"} or C{"callee"}.
    @ivar uri: the AOR on this side (From URI for the caller, To URI for the callee).
    @ivar phone_uri: key of the L{Phone} on this side, C{None} when the side
        is OpenSIPS' own UAC (click-to-dial caller leg, 3.4/README.md) or an
        unknown user.
    @ivar alive: the phone still considers the call up (a BYE sent straight
        to it, bypassing the proxy, clears this but not the OpenSIPS dialog).
    @ivar hold: 4.0 model: the set of legs whose hold this leg's last accepted
        re-INVITE expressed; 3.4 model: marked when sent.
    """

    role: str
    uri: str
    phone_uri: str | None
    phone: Phone | None
    contact: str = ""
    tag: str | None = None
    cseq: int = 0
    sdp: str | None = None
    alive: bool = True
    hold: frozenset[str] = frozenset()
    reinvites_pending: int = 0

    @property
    def is_local(self) -> bool:
        """Whether no phone is on this side (OpenSIPS' own UAC, or an unknown user)."""
        return self.phone is None and self.phone_uri is None


@attr.s(auto_attribs=True, eq=False)
class Dialog:
    """
    An OpenSIPS dialog as the dialog module keeps it.

    @ivar state: 1 unconfirmed, 2 early, 3 confirmed (no ACK), 4 confirmed,
        5 deleted (3.4/README.md "E_DLG_STATE_CHANGED").
    @ivar transfer: C{None}, C{"running"} or C{"ended"}: callops answers 491
        to any further transfer once one started (both versions,
        4.0/d_blind_transfer_retry_after_fail).
    """

    callid: str
    h_entry: int
    h_id: int
    caller: Leg
    callee: Leg
    state: int = 1
    timestart: int = 0
    ended_at: float | None = None
    transfer: str | None = None
    click_to_dial: bool = False
    invite_chain: Any = None
    #: who hears the proxied INVITE's final answer (e.g. a transfer)
    invite_final: Any = None
    created_seq: int = 0

    @property
    def dialog_id(self) -> str:
        """C{"<hex>.<hex>"} as in C{;did=} and E_DLG_STATE_CHANGED C{id}."""
        return f"{rev_hex(self.h_entry)}.{rev_hex(self.h_id)}"

    @property
    def db_id(self) -> str:
        """Decimal string C{(h_entry << 32) | h_id} (3.4/f_hold_unhold.jsonl:
        C{cfc.8e0edac7} <-> C{14278563061992})."""
        return str((self.h_entry << 32) | self.h_id)

    @property
    def held(self) -> frozenset[str]:
        """Legs currently marked on hold."""
        return frozenset(leg.role for leg in (self.caller, self.callee) if leg.hold)

    @property
    def from_uri(self) -> str:
        """The caller leg's URI."""
        return self.caller.uri

    @property
    def to_uri(self) -> str:
        """The callee leg's URI."""
        return self.callee.uri

    def leg(self, role: str) -> Leg:
        """The leg of C{role} (C{"caller"} or C{"callee"})."""
        return self.caller if role == "caller" else self.callee

    def other(self, role: str) -> Leg:
        """The leg that is not C{role}."""
        return self.callee if role == "caller" else self.caller

    @property
    def active(self) -> bool:
        """Whether the dialog is not deleted yet (state below 5)."""
        return self.state < 5


def user_of(uri: str) -> str:
    """C{sip:cindy@127.0.0.1;osid=x} -> C{cindy}."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    return rest.split("@", 1)[0] if "@" in rest else ""


def strip_uri(uri: str) -> str:
    """C{<sip:a@b>;tag=x} or C{"A" <sip:a@b>} -> C{sip:a@b}."""
    uri = uri.strip()
    if "<" in uri and ">" in uri:
        return uri[uri.index("<") + 1 : uri.index(">")]
    return uri.split(";", 1)[0].strip()


def valid_sip_uri(uri: str) -> bool:
    """A URI tm would accept as R-URI / next_hop (3.4/h_errors.jsonl id 5);
    the scheme is case-insensitive (OpenSIPS parse_uri, RFC 3261 19.1.4)."""
    if not uri.lower().startswith(("sip:", "sips:")):
        return False
    rest = uri.split(":", 1)[1]
    host = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    return bool(host) and " " not in uri


def baresip_sdp(user: str, port: int, rng: random.Random) -> str:
    """An SDP like baresip's (3.4/i_dlg_list.jsonl C{caller_sdp})."""
    sess = rng.randrange(10**8, 10**10)
    return (
        "v=0\r\n"
        f"o=- {sess} {rng.randrange(10**7, 10**9)} IN IP4 127.0.0.1\r\n"
        "s=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:baresip 1.0.0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\na=sendrecv\r\na=label:1\r\n"
        f"a=ssrc:{rng.randrange(10**8, 4 * 10**9)} cname:sip:{user}@127.0.0.1\r\n"
        "a=minptime:20\r\na=ptime:20\r\n"
    )


def phone_sdp(user: str, rng: random.Random) -> str:
    """L{baresip_sdp} on a random even RTP port in 20000-20998."""
    return baresip_sdp(user, 20000 + rng.randrange(0, 500) * 2, rng)


def local_time(ts: int) -> str:
    """C{datestart}/C{dateout} format (3.4/i_dlg_list.jsonl)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
