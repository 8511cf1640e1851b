"""
The SIP side of the OpenSIPS emulator: simulated phones, dialogs and
identifiers (their timings are in L{callapi.emulator.timings}).

Nothing here sends anything; L{callapi.emulator.core} drives it.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import attr

from callapi.emulator.timings import UA_TIMING

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
