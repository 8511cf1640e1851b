"""
An OpenSIPS emulator: NOT a real OpenSIPS.

It answers the Management Interface (JSON-RPC over datagrams, module
C{mi_datagram}) and raises EVI events (module C{event_datagram}) the way a
real OpenSIPS 3.4.18 or 4.0.1 with the C{tm}, C{dialog} and C{callops}
modules did in the reference captures under
C{../shared/opensips-traces/{3.4,4.0}} (the "traces"), for calls between
simulated phones (L{Phone}).  Every behaviour below names the trace it
follows; the replay test C{tests/test_emulator_traces.py} checks the
emulator against those traces.

Use it in unit tests with a L{twisted.internet.task.Clock}::

    sent, replies = [], []
    emu = OpenSIPSEmulator(clock, lambda socket, data: sent.append((socket, data)))
    emu.add_default_phones()
    callid = emu.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
    clock.advance(1)                      # 1->2, 2->3, 3->4
    emu.handle_datagram(b'{"jsonrpc":"2.0","method":"call_hold","id":1,'
                        b'"params":{"callid":"%s"}}' % callid.encode(), replies.append)
    clock.advance(1)                      # E_CALL_HOLD start/ok, reply "OK"

or on real sockets with L{start_emulator}, or standalone::

    python -m callapi.emulator --mi udp:127.0.0.1:8080 [--version 4.0]
        [--delay-scale 1] [--demo-calls N]
"""

from __future__ import annotations

import collections
import json
import random
import sys
from functools import partial
from typing import Any, Callable, Mapping, cast

import attr
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from callapi.logging import logger
from callapi.emulator import sip
from callapi.emulator.mi_table import (
    PARSE_ERROR, CommandTable, MIError, dumps, encode_error, encode_event,
    encode_result, invalid_params, match_recipe, param_int, param_str,
    server_error,
)
from callapi.emulator.scheduler import Chain, Scheduler
from callapi.emulator.sip import Dialog, Leg, Phone, default_phones

__all__ = ["OpenSIPSEmulator", "Phone", "start_emulator", "RunningEmulator",
           "SubscriptionInfo", "EMULATOR_BANNER", "add_default_phones", "default_phones"]

EMULATOR_BANNER = ("OpenSIPS EMULATOR (callapi.emulator) - this is NOT a real "
                   "OpenSIPS; it imitates OpenSIPS {version} from recorded traces")

#: EVI events and their ids (3.4/which_and_meta.jsonl "events_list",
#: 4.0/which_and_meta.jsonl "evi:list": two new core events shift the ids).
EVENTS = {
    "3.4": ["E_CORE_SR_STATUS_CHANGED", "E_CORE_THRESHOLD", "E_CORE_SHM_THRESHOLD",
            "E_CORE_PKG_THRESHOLD", "E_CORE_PROC_AUTO_SCALE", "E_CORE_TCP_DISCONNECT",
            "E_DLG_STATE_CHANGED", "E_CALL_TRANSFER", "E_CALL_HOLD", "E_CORE_LOG"],
    "4.0": ["E_CORE_SR_STATUS_CHANGED", "E_CORE_THRESHOLD", "E_CORE_SHM_THRESHOLD",
            "E_CORE_PKG_THRESHOLD", "E_CORE_PROC_AUTO_SCALE", "E_CORE_TCP_DISCONNECT",
            "E_PROFILING_SCRIPT", "E_PROFILING_PROC", "E_DLG_STATE_CHANGED",
            "E_CALL_TRANSFER", "E_CALL_HOLD", "E_CORE_LOG"],
}

#: Default C{expire} of event_subscribe (3.4/h_subscription_expiry.jsonl id 20).
DEFAULT_EXPIRE = 3600

_ASYNC = object()


@attr.s(auto_attribs=True, eq=False)
class _Subscription:
    event: str
    socket: str
    expire: int
    since: int

    def expired(self, now: int) -> bool:
        """Delivers while C{now <= since + expire}, whole seconds
        (3.4/h_subscription_expiry.jsonl: expire 3 delivered at +3 s, not +4 s)."""
        return now > self.since + self.expire


@attr.s(frozen=True, auto_attribs=True)
class SubscriptionInfo:
    """
    What L{OpenSIPSEmulator.subscribers} reports for one subscription.

    @ivar expire: the C{expire} it was (re)subscribed with, seconds.
    @ivar subscribed_at: whole-second clock value of the last (re)subscribe.
    @ivar expires_at: last whole second at which it still gets events.
    """

    expire: int
    subscribed_at: int
    expires_at: int


@attr.s(auto_attribs=True, eq=False)
class _Final:
    """A final answer to an INVITE, as tm reports it."""

    code: int
    status: str
    local: bool = False
    message: bool = True


class _Respond:
    """Sends the reply datagram(s) of one MI request; nothing for notifications."""

    def __init__(self, reply: Callable[[bytes], None] | None, request_id: Any,
                 method: str) -> None:
        self._reply = reply
        self.request_id = request_id
        self.method = method

    def result(self, value: Any) -> None:
        if self._reply is not None:
            self._reply(encode_result(self.request_id, value))

    def error(self, err: MIError) -> None:
        if self._reply is not None:
            self._reply(encode_error(self.request_id, err))


def _finite_float(text: str) -> float:
    """JSON numbers that overflow a double are not JSON we could echo back."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"not JSON: {text}")


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


class OpenSIPSEmulator:
    """
    The emulated OpenSIPS: MI in (L{handle_datagram}), EVI events out
    (C{send_event}), simulated phones and their calls.

    @param clock: where every delay is scheduled (a C{Clock} in unit tests).
    @param send_event: C{send_event(socket, datagram)} delivers one event
        datagram to a subscriber socket such as C{"udp:127.0.0.1:9921"} or
        C{"unix:/path"}.
    @param version: C{"3.4"} or C{"4.0"} (names, per-leg hold, error texts,
        the 4.0.1 crash on requests without a string C{method}).
    @param delay_scale: multiplies every trace-derived delay; 0 runs
        everything as fast as possible, order preserved.
    @param pass_provisional_replies: tm's non-default
        C{pass_provisional_replies=1}: t_uac_dlg sends each 18x as an extra
        reply datagram with the same id first
        (3.4/b_click_to_dial_pass_provisional_replies.jsonl).
    @param seed: seeds the generator of tags, Call-IDs and dialog ids.
    """

    _log = logger()

    def __init__(self, clock: IReactorTime, send_event: Callable[[str, bytes], None],
                 version: str = "3.4", delay_scale: float = 1.0, *,
                 pass_provisional_replies: bool = False,
                 seed: int | None = None) -> None:
        if version not in ("3.4", "4.0"):
            raise ValueError("version must be '3.4' or '4.0'")
        self.clock = clock
        self.version = version
        self.pass_provisional_replies = pass_provisional_replies
        self._send_event = send_event
        self._sched = Scheduler(clock, delay_scale)
        self._rng = random.Random(seed)
        self._ids = sip.IdFactory(self._rng)
        self._table = CommandTable(version)
        self._events = EVENTS[version]
        self._subs: dict[str, list[_Subscription]] = {}
        self._phones: dict[str, tuple[str, Phone]] = {}
        self.dialogs: dict[str, Dialog] = {}
        self._by_dialog_id: dict[str, Dialog] = {}
        self._ended: collections.deque[Dialog] = collections.deque()
        self._uac_pending: dict[tuple[str, int], dict[str, Any]] = {}
        self._shv: dict[str, tuple[str, Any]] = {"notify_delay_ms": ("integer", 0)}
        self._seq = 0
        self._handlers: dict[str, Callable[[dict[str, Any], _Respond], Any]] = {
            "core:which": self._cmd_which,
            "core:version": self._cmd_version,
            "core:help": self._cmd_help,
            "core:uptime": self._cmd_uptime,
            "evi:list": self._cmd_events_list,
            "evi:subscribe": self._cmd_subscribe,
            "evi:subscribers": self._cmd_subscribers,
            "evi:raise": self._cmd_raise,
            "tm:uac_dlg": self._cmd_uac_dlg,
            "tm:uac_cancel": self._cmd_uac_cancel,
            "dialog:list": self._cmd_dlg_list,
            "dialog:list_ctx": lambda p, r: self._cmd_dlg_list(p, r, ctx=True),
            "dialog:end_dlg": self._cmd_end_dlg,
            "callops:hold": lambda p, r: self._cmd_hold(p, r, "hold"),
            "callops:unhold": lambda p, r: self._cmd_hold(p, r, "unhold"),
            "callops:transfer": self._cmd_transfer,
            "cfgutils:shv_get": self._cmd_shv_get,
            "cfgutils:shv_set": self._cmd_shv_set,
        }
        self._started = clock.seconds()

    # ------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------

    @property
    def pending_calls(self) -> int:
        """Outstanding scheduled C{DelayedCall}s (tests check for leaks)."""
        return self._sched.pending_calls

    def stop(self) -> None:
        """Cancel everything scheduled.  The emulator is unusable afterwards."""
        self._sched.stop()

    def add_phone(self, uri: str, phone: Phone) -> None:
        """
        Make C{uri} (e.g. C{"sip:alice@127.0.0.1"}) a reachable user.  The
        proxy routes by R-URI user only (3.4/opensips.cfg), so the user part is
        the key.  Users not added get C{t_reply(404, "User Not Found")}.
        """
        self._phones[sip.user_of(uri)] = (uri, phone)

    def add_default_phones(self) -> None:
        """The harness phones: alice, bob, cindy (baresip), dave, erin
        (linphone), busy, noanswer, slow (sipp), offline (3.4/README.md)."""
        for uri, phone in default_phones().items():
            self.add_phone(uri, phone)

    @property
    def phones(self) -> dict[str, Phone]:
        return {uri: phone for uri, phone in self._phones.values()}

    @property
    def subscribers(self) -> dict[tuple[str, str], SubscriptionInfo]:
        """(event, socket) -> L{SubscriptionInfo}, expired ones included until
        they are purged (by raising that event)."""
        out = {}
        for event, subs in self._subs.items():
            for s in subs:
                out[(event, s.socket)] = SubscriptionInfo(s.expire, s.since,
                                                          s.since + s.expire)
        return out

    def subscribe(self, event: str, socket: str, expire: int = DEFAULT_EXPIRE) -> None:
        """Subscribe as C{event_subscribe} would (no validation)."""
        self._add_subscription(event, socket, expire)

    def add_call(self, caller_uri: str, callee_uri: str, callid: str | None = None) -> str:
        """
        The phone C{caller_uri} dials C{callee_uri} through the proxy: a
        dialog that goes 1->2->3->4 with E_DLG_STATE_CHANGED events
        (3.4/f_hold_unhold.jsonl, NOTE "UA alice dials sip:bob@127.0.0.1"),
        or fails/rings according to the callee's L{Phone.answer}.

        @return: the Call-ID (C{callid} or one generated in the caller's
            format); the dialog is in L{dialogs} at once, in state 1.
        """
        if sip.user_of(caller_uri) not in self._phones:
            raise KeyError(f"unknown caller phone {caller_uri}")
        curi, cphone = self._phones[sip.user_of(caller_uri)]
        if callid is None:
            callid = self._ids.callid(cphone.ua)
        self._purge_deleted()
        dlg = self._new_dialog(callid, caller_uri=curi, caller_phone=curi,
                               caller_contact=cphone.contact_for(sip.user_of(curi)),
                               caller_tag=self._ids.tag(cphone.ua),
                               callee_uri=callee_uri)
        dlg.caller.cseq = self._ids.cseq()
        dlg.caller.sdp = sip.baresip_sdp(sip.user_of(curi),
                                         20000 + self._rng.randrange(0, 500) * 2, self._rng)
        self._route_invite(dlg, start_ms=sip.DIAL_MS, ack_ms=cphone.timing["ack"],
                           on_final=lambda final: None)
        return callid

    def hangup(self, callid: str, by: str = "caller") -> None:
        """
        The phone on side C{by} (C{"caller"}/C{"callee"}) ends the call
        itself: BYE -> E_DLG 4->5 (3.4/a_click_to_dial_success.jsonl, NOTE
        "bob hangs up"), or CANCEL of a ringing call -> 2->5
        (3.4/i_dlg_list.wire.txt, alice's CANCEL at 3031.5).
        """
        dlg = self.dialogs.get(callid)
        if dlg is None or not dlg.active:
            raise KeyError(f"no active dialog {callid}")
        if dlg.state >= 3:
            self._sched.chain(f"hangup {callid}", [
                (sip.HANGUP_MS, lambda: self._end_dialog(dlg))])
        else:
            if dlg.invite_chain is not None:
                dlg.invite_chain.cancel()
            self._sched.chain(f"cancel {callid}", [
                (sip.CANCEL_MS, lambda: self._end_dialog(dlg))])

    def handle_datagram(self, data: bytes, reply: Callable[[bytes], None]) -> None:
        """
        One MI request datagram in; C{reply(datagram)} zero or more times,
        now or later.  Transport rules from 3.4/h_errors.jsonl and
        4.0/h_errors.jsonl, 4.0/h_mi_crash.jsonl.
        """
        self._purge_deleted()
        try:
            request = json.loads(data.decode("utf-8"), parse_float=_finite_float,
                                 parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError):
            self._log.warn("MI: unparsable datagram, answering 400 Parse_error")
            reply(PARSE_ERROR)
            return
        if not isinstance(request, dict):
            if self.version == "4.0":
                self._crash("a non-object request (batch or bare value)")
                return
            reply(encode_error(None, MIError(-32600, "Invalid Request")))
            return
        has_id = "id" in request
        request_id = request.get("id")
        method = request.get("method")
        if self.version == "4.0" and not isinstance(method, str):
            self._crash("a request without a string 'method'")
            return
        respond = _Respond(reply if has_id else None, request_id,
                           method if isinstance(method, str) else "")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            respond.error(MIError(-32600, "Invalid Request"))
            return
        try:
            cmd = self._table.resolve(method)
            params = match_recipe(cmd, request.get("params"))
            handler = self._handlers.get(cmd.canonical)
            if handler is None:
                raise MIError(500, "Not supported by the OpenSIPS emulator")
            result = handler(params, respond)
        except MIError as e:
            self._log.debug("MI {mi_method} id={mi_id} -> error {code} {message}",
                            mi_method=method, mi_id=request_id, code=e.code,
                            message=e.message)
            respond.error(e)
            return
        except Exception:
            # a bug in the emulator, not bad input: say so, keep serving
            self._log.failure("MI {mi_method} id={mi_id}: emulator bug",
                              mi_method=method, mi_id=request_id)
            respond.error(MIError(500, "Internal error in the OpenSIPS emulator"))
            return
        if result is not _ASYNC:
            respond.result(result)

    # ------------------------------------------------------------------
    # internals: events and subscriptions
    # ------------------------------------------------------------------

    def _crash(self, what: str) -> None:
        """
        OpenSIPS 4.0.1's mi_datagram segfaults on a request without a string
        method and the whole proxy exits (4.0/h_mi_crash.jsonl).  The
        emulator keeps running but says so loudly and does not answer.
        """
        self._log.error(
            "MI: received {what}: a real OpenSIPS 4.0.1 CRASHES HERE and exits "
            "(4.0/h_mi_crash); the emulator drops the request without a reply",
            what=what)

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _wall(self) -> int:
        """Epoch seconds for dlg_list C{timestart}: the clock if it looks
        like wall time, else the trace era plus the clock."""
        now = self.clock.seconds()
        return int(now) if now > 1e9 else int(1_796_000_000 + now)

    def _add_subscription(self, event: str, socket: str, expire: int) -> None:
        subs = self._subs.setdefault(event, [])
        for s in subs:
            if s.socket == socket:
                s.expire = expire
                s.since = self._now()
                return
        # new subscriptions go in front (3.4/h_subscribers_list_bug NOTE
        # "our subscription ... is added in front of the now expired X")
        subs.insert(0, _Subscription(event, socket, expire, self._now()))

    def _raise(self, event: str, params: dict[str, Any] | None = None, *,
               datagram: bytes | None = None) -> bool:
        """
        Deliver one event to its live subscribers, purging expired ones
        (3.4/h_subscription_expiry.jsonl: the first raise after expiry answers
        "OK" and delivers nothing, the next one 480).

        @return: whether the event had any subscriber before the purge.
        """
        subs = self._subs.get(event, [])
        had = bool(subs)
        now = self._now()
        data = datagram if datagram is not None else encode_event(event, params)
        for s in list(subs):
            if s.expired(now):
                subs.remove(s)
                continue
            self._log.debug("EVI {event} -> {socket}", event=event, socket=s.socket)
            try:
                self._send_event(s.socket, data)
            except Exception:
                self._log.failure("EVI send to {socket} failed", socket=s.socket)
        return had

    # ------------------------------------------------------------------
    # internals: dialogs
    # ------------------------------------------------------------------

    def _new_dialog(self, callid: str, *, caller_uri: str, caller_phone: str | None,
                    caller_contact: str, caller_tag: str | None,
                    callee_uri: str, callee_user: str | None = None) -> Dialog:
        entry, hid = self._ids.dialog_ids(callid)
        known = self._phones.get(sip.user_of(caller_phone)) if caller_phone else None
        cphone = known[1] if known else None
        target = self._phones.get(callee_user if callee_user is not None
                                  else sip.user_of(callee_uri))
        caller = Leg("caller", caller_uri, caller_phone, cphone, contact=caller_contact,
                     tag=caller_tag)
        callee = Leg("callee", callee_uri, target[0] if target else None,
                     target[1] if target else None)
        self._seq += 1
        dlg = Dialog(callid, entry, hid, caller, callee, created_seq=self._seq)
        self.dialogs[callid] = dlg
        self._by_dialog_id[dlg.dialog_id] = dlg
        return dlg

    def _purge_deleted(self) -> None:
        """
        Forget dialogs deleted more than C{DELETED_LINGER_S} ago (they stay
        listed for a while, 3.4 README "dlg_list").  Ended dialogs queue in
        the order they ended, so this costs O(purged), not O(dialogs).
        """
        now = self.clock.seconds()
        ended = self._ended
        # Only ended dialogs are queued, so ended_at is set.
        while ended and now - cast(float, ended[0].ended_at) > sip.DELETED_LINGER_S:
            dlg = ended.popleft()
            if self.dialogs.get(dlg.callid) is dlg:
                del self.dialogs[dlg.callid]
            if self._by_dialog_id.get(dlg.dialog_id) is dlg:
                del self._by_dialog_id[dlg.dialog_id]

    def _find_dialog(self, key: str) -> Dialog | None:
        """An active dialog by Call-ID or internal ID (dlg_end_dlg accepts
        both, 3.4/g_dlg_end_dlg.jsonl id 11)."""
        dlg = self.dialogs.get(key)
        if dlg is not None and dlg.active:
            return dlg
        dlg = self._by_dialog_id.get(key)
        if dlg is not None and dlg.active:
            return dlg
        return None

    def _set_state(self, dlg: Dialog, new: int) -> None:
        old = dlg.state
        if old == new or old == 5:
            return
        dlg.state = new
        if new in (3, 4) and not dlg.timestart:
            dlg.timestart = self._wall()
        if new == 5:
            dlg.ended_at = self.clock.seconds()
            self._ended.append(dlg)
            dlg.caller.alive = dlg.callee.alive = False
        self._raise("E_DLG_STATE_CHANGED", {
            "id": dlg.dialog_id, "db_id": dlg.db_id, "callid": dlg.callid,
            "from_tag": dlg.caller.tag, "to_tag": dlg.callee.tag,
            "old_state": old, "new_state": new})

    def _hangup_if_active(self, dlg: Dialog) -> None:
        if dlg.active:
            self._end_dialog(dlg)

    def _end_dialog(self, dlg: Dialog) -> None:
        if dlg.invite_chain is not None:
            dlg.invite_chain.cancel()
            dlg.invite_chain = None
        self._set_state(dlg, 5)

    def _route_invite(self, dlg: Dialog, *, start_ms: float, ack_ms: float,
                      on_final: Callable[[_Final], None],
                      on_ringing: Callable[[], None] | None = None,
                      answer_ms: float | None = None,
                      on_ring_extra: Callable[[], None] | None = None,
                      unknown_ms: float = sip.UNKNOWN_USER_MS) -> Chain:
        """
        The proxied INVITE of C{dlg} towards its callee's phone, from
        C{start_ms} (when the INVITE reaches OpenSIPS) on:

          - unknown user: C{t_reply(404)}: E_DLG 1->5, final "404 User Not
            Found" (3.4/b_click_to_dial_unknown_user.jsonl);
          - C{offline}: 1->5 and a local 408 after fr_timeout
            (3.4/b_click_to_dial_offline.jsonl);
          - C{busy}: 180 (1->2), 486 after 0.5 s (2->5)
            (3.4/b_click_to_dial_busy.jsonl);
          - C{noanswer}: 180 (1->2), local 408 without Message after
            fr_inv_timeout (2->5) (3.4/b_click_to_dial_noanswer.jsonl);
          - C{auto}: 180 (1->2), 200 (2->3) after C{answer_delay}, ACK (3->4)
            C{ack_ms} later (3.4/f_hold_unhold.jsonl,
            3.4/f_hold_early_and_click_to_dial.jsonl for C{slow}).
        """
        ch = self._sched.chain(f"invite {dlg.callid}")
        dlg.invite_chain = ch
        dlg.invite_final = on_final
        phone = dlg.callee.phone

        def alive() -> bool:
            return dlg.active

        def fail(final: _Final) -> Callable[[], None]:
            def step() -> None:
                if not alive():
                    return
                self._set_state(dlg, 5)
                dlg.invite_chain = None
                on_final(final)
            return step

        if phone is None:
            ch.add(start_ms + unknown_ms,
                   fail(_Final(404, "404 User Not Found", local=True)))
            return ch
        timing = phone.timing
        if phone.answer == "offline":
            ch.add(start_ms + sip.OFFLINE_MS[self.version],
                   fail(_Final(408, "408 Request Timeout", local=True)))
            return ch
        ring_at = start_ms + timing["ring"]
        user = sip.user_of(dlg.callee.uri) or "user"

        def ringing() -> None:
            if not alive():
                return
            dlg.callee.tag = self._ids.tag(phone.ua)
            if phone.ua != "sipp":
                dlg.callee.contact = phone.contact_for(sip.user_of(dlg.callee.phone_uri or ""))
            self._set_state(dlg, 2)
            if on_ring_extra is not None:
                on_ring_extra()
            if on_ringing is not None:
                on_ringing()

        ch.add(ring_at, ringing)
        if phone.answer == "busy":
            ch.add(ring_at + sip.BUSY_MS, fail(_Final(486, "486 Busy Here")))
        elif phone.answer == "noanswer":
            ch.add(start_ms + sip.NOANSWER_MS[self.version],
                   fail(_Final(408, "408 Request Timeout", local=True, message=False)))
        else:
            answer_at = (ring_at + (timing["answer"] if answer_ms is None else answer_ms)
                         + phone.answer_delay * 1000.0)

            def answered() -> None:
                if not alive():
                    return
                dlg.callee.contact = phone.contact_for(
                    sip.user_of(dlg.callee.phone_uri or ""))
                dlg.callee.sdp = sip.baresip_sdp(user, 20000 + self._rng.randrange(0, 500) * 2,
                                                 self._rng)
                self._set_state(dlg, 3)
                on_final(_Final(int(phone.status.split()[0]), phone.status))

            def acked() -> None:
                if dlg.state == 3:
                    self._set_state(dlg, 4)
                dlg.invite_chain = None

            ch.add(answer_at, answered)
            ch.add(answer_at + ack_ms, acked)
        return ch

    # ------------------------------------------------------------------
    # MI commands: meta
    # ------------------------------------------------------------------

    def _cmd_which(self, params: dict[str, Any], respond: _Respond) -> Any:
        """C{which} [C{command}] (3.4/which_and_meta.jsonl,
        4.0/which_and_meta.jsonl ids 1, 4-18)."""
        name = param_str(params, "command")
        if name is None:
            return self._table.which()
        if self.version == "4.0" and name.endswith(":") and name.count(":") == 1:
            names = self._table.module_names(name[:-1])
            if names is None:
                raise MIError(404, "unknown MI command")
            return names
        cmd = self._table.lookup_for_help(name)
        if cmd is None:
            raise MIError(404, "unknown MI command")
        return [list(r) for r in cmd.recipes]

    def _cmd_version(self, params: dict[str, Any], respond: _Respond) -> Any:
        """C{{"Server": "OpenSIPS (3.4.18 (x86_64/linux))"}} (which_and_meta)."""
        return {"Server": sip.SERVER_HEADER[self.version]}

    def _cmd_uptime(self, params: dict[str, Any], respond: _Respond) -> Any:
        up = int(self.clock.seconds() - self._started)
        return {"Now": sip.local_time(self._wall()), "Up since": sip.local_time(self._wall() - up),
                "Up time": f"{up} [sec]"}

    def _cmd_help(self, params: dict[str, Any], respond: _Respond) -> Any:
        """C{help mi_cmd=<name>} (3.4/which_and_meta.jsonl ids 4-6,
        4.0/which_and_meta.jsonl ids 19-25: 404 for unknown or ambiguous)."""
        name = param_str(params, "mi_cmd")
        if name is None:
            return {"Help": "not available for this command", "Exported by": "core"}
        cmd = self._table.lookup_for_help(name)
        if cmd is None:
            raise MIError(404, "unknown MI command")
        return {"Help": cmd.help, "Exported by": cmd.exported_by}

    def _cmd_events_list(self, params: dict[str, Any], respond: _Respond) -> Any:
        """C{events_list} / C{evi:list} (which_and_meta of both versions)."""
        return {"Events": [{"name": n, "id": i} for i, n in enumerate(self._events)]}

    # ------------------------------------------------------------------
    # MI commands: event interface
    # ------------------------------------------------------------------

    def _cmd_subscribe(self, params: dict[str, Any], respond: _Respond) -> Any:
        """
        C{event_subscribe} (3.4/h_errors.jsonl ids 9-15,
        3.4/h_subscription_expiry.jsonl): unknown event or a socket that is
        not C{udp:host:port}/C{unix:path} -> 400 "Bad parameter value";
        negative expire -> -32602; numeric strings accepted; default 3600;
        re-subscribing refreshes; C{expire: 0} unsubscribes lazily (it still
        delivers during the current second).
        """
        event = param_str(params, "event") or ""
        socket = param_str(params, "socket") or ""
        expire = param_int(params, "expire", DEFAULT_EXPIRE)
        assert expire is not None
        if event not in self._events or not _valid_socket(socket):
            raise MIError(400, "Bad parameter value")
        if expire < 0:
            raise invalid_params("Negative expire value")
        self._add_subscription(event, socket, expire)
        return "OK"

    def _cmd_subscribers(self, params: dict[str, Any], respond: _Respond) -> Any:
        """
        C{subscribers_list} [event [socket]].  3.4 bug reproduced
        (3.4/h_subscribers_list_bug.jsonl): the purge never advances its
        C{prev} pointer, so every subscriber in front of an expired one is
        unlinked too; fixed in 4.0 (4.0/h_subscribers_list_bug.jsonl).
        """
        event = param_str(params, "event")
        socket = param_str(params, "socket")
        now = self._now()
        if event is not None and event not in self._events:
            raise MIError(404, "Unknown event")
        for name in ([event] if event else list(self._subs)):
            subs = self._subs.get(name, [])
            if self.version == "3.4":
                last = max((i for i, s in enumerate(subs) if s.expired(now)), default=-1)
                del subs[:last + 1]
            else:
                subs[:] = [s for s in subs if not s.expired(now)]

        def entry(name: str, only: str | None = None) -> dict[str, Any]:
            subs = [s for s in self._subs.get(name, []) if only is None or s.socket == only]
            if not subs:
                return {}
            listed = []
            for s in subs:
                ttl = s.since + s.expire - now
                listed.append({"socket": s.socket, "expire": s.expire,
                               "ttl": ttl if ttl > 0 else "expired"})
            return {"name": name, "id": self._events.index(name), "Subscribers": listed}

        if event is not None:
            return {"Event": entry(event, socket)}
        events = [entry(n) for n in self._events]
        return {"Events": [e for e in events if e]}

    def _cmd_raise(self, params: dict[str, Any], respond: _Respond) -> Any:
        """
        C{raise_event} (3.4/h_subscription_expiry.jsonl ids 22-26): C{params}
        must be a JSON string of an object or an array (values become params
        with empty names); an object -> 400 "No Params"; unknown event -> 404
        "Event not registered"; no subscriber -> 480 "Temporarily
        Unavailable".
        """
        event = param_str(params, "event") or ""
        if event not in self._events:
            raise MIError(404, "Event not registered")
        datagram: bytes | None = None
        evparams: dict[str, Any] | None = None
        if "params" in params:
            raw = params["params"]
            if isinstance(raw, str):
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise MIError(400, "No Params")
                if not isinstance(parsed, dict):
                    raise MIError(400, "No Params")
                evparams = parsed
            elif isinstance(raw, list):
                pairs = ",".join('"":' + dumps(v if isinstance(v, str) else
                                               json.dumps(v)).decode("utf-8")
                                 for v in raw)
                datagram = (b'{"jsonrpc":"2.0","method":' + dumps(event)
                            + b',"params":{' + pairs.encode("utf-8") + b"}}")
            else:
                raise MIError(400, "No Params")
        if not self._subs.get(event):
            raise MIError(480, "Temporarily Unavailable")
        self._raise(event, evparams, datagram=datagram)
        return "OK"

    # ------------------------------------------------------------------
    # MI commands: cfgutils
    # ------------------------------------------------------------------

    def _cmd_shv_get(self, params: dict[str, Any], respond: _Respond) -> Any:
        """C{shv_get} (4.0/which_and_meta.jsonl id 61)."""
        name = param_str(params, "name")
        if name is None:
            return {"VARs": [{"name": n, "type": t, "value": v}
                             for n, (t, v) in self._shv.items()]}
        if name not in self._shv:
            raise MIError(404, "Variable not found")
        t, v = self._shv[name]
        return {"VAR": {"type": t, "value": v}}

    def _cmd_shv_set(self, params: dict[str, Any], respond: _Respond) -> Any:
        """
        C{shv_set}.  C{notify_delay_ms} is the harness knob of the 3.4 traces
        (3.4/README.md): baresip's transfer NOTIFYs then arrive late and are
        matched (C{*_notify_delay} traces).
        """
        name = param_str(params, "name") or ""
        kind = param_str(params, "type") or ""
        if kind in ("int", "integer", "i"):
            value: Any = param_int(params, "value")
            self._shv[name] = ("integer", value)
        elif kind in ("str", "string", "s"):
            self._shv[name] = ("string", param_str(params, "value"))
        else:
            raise MIError(400, "bad shv type")
        return "OK"

    @property
    def _notify_delay(self) -> float:
        value = self._shv.get("notify_delay_ms", ("integer", 0))[1]
        return float(value) if isinstance(value, int) else 0.0

    # ------------------------------------------------------------------
    # MI commands: dialog module
    # ------------------------------------------------------------------

    def _dialog_json(self, dlg: Dialog, ctx: bool = False) -> dict[str, Any]:
        """One dialog as dlg_list prints it (3.4/i_dlg_list.jsonl)."""
        out: dict[str, Any] = {"ID": dlg.dialog_id, "db_id": dlg.db_id,
                               "state": dlg.state, "user_flags": "",
                               "timestart": dlg.timestart}
        if dlg.timestart:
            out["datestart"] = sip.local_time(dlg.timestart)
        timeout = dlg.timestart + sip.DIALOG_TIMEOUT_S if dlg.timestart and dlg.active else 0
        out["timeout"] = timeout
        if timeout:
            out["dateout"] = sip.local_time(timeout)
        out.update({
            "callid": dlg.callid, "from_uri": dlg.from_uri, "to_uri": dlg.to_uri,
            "caller_tag": dlg.caller.tag or "", "caller_contact": dlg.caller.contact,
            "callee_cseq": str(dlg.callee.cseq), "caller_route_set": "",
            "caller_bind_addr": sip.BIND_ADDR})
        if dlg.caller.sdp is not None:
            out["caller_sdp"] = dlg.caller.sdp
        callee: dict[str, Any] = {
            "callee_tag": dlg.callee.tag or "", "callee_contact": dlg.callee.contact,
            "caller_cseq": str(dlg.caller.cseq), "callee_route_set": "",
            "callee_bind_addr": sip.BIND_ADDR}
        if dlg.callee.sdp is not None:
            callee["callee_sdp"] = dlg.callee.sdp
        # no callee leg until a reply with a To tag came back: a dialog
        # rejected by the script's t_reply(404) lists none
        # (3.4/c_click_to_dial_transfer_unknown_user.jsonl, dlg_list id 6)
        out["CALLEES"] = [callee] if dlg.callee.tag is not None else []
        if ctx:
            out["context"] = {}
        return out

    def _listed(self) -> list[Dialog]:
        """dlg_list order: by hash entry, then creation (3.4/i_dlg_list.jsonl
        lists C{203.*}, C{a89.*}, C{bca.*}: entries 0x302 < 0x98a < 0xacb)."""
        return sorted(self.dialogs.values(), key=lambda d: (d.h_entry, d.created_seq))

    def _cmd_dlg_list(self, params: dict[str, Any], respond: _Respond,
                      ctx: bool = False) -> Any:
        """
        C{dlg_list} / C{dlg_list_ctx} (3.4/i_dlg_list.jsonl): all ->
        C{{"Dialogs": [...]}}, C{callid} -> C{{"Dialog": {...}}} or 404 "No
        such dialog", C{index}/C{counter} -> C{{"count": N, "Dialogs": [...]}}.
        Deleted dialogs stay listed for a while.
        """
        callid = param_str(params, "callid")
        if callid is not None:
            from_tag = param_str(params, "from_tag")
            for dlg in self._listed():
                if dlg.callid == callid and (from_tag is None or dlg.caller.tag == from_tag):
                    return {"Dialog": self._dialog_json(dlg, ctx)}
            raise MIError(404, "No such dialog")
        listed = self._listed()
        if "index" in params:
            index = param_int(params, "index") or 0
            counter = param_int(params, "counter") or 0
            return {"count": len(listed),
                    "Dialogs": [self._dialog_json(d, ctx) for d in listed[index:index + counter]]}
        return {"Dialogs": [self._dialog_json(d, ctx) for d in listed]}

    def _cmd_end_dlg(self, params: dict[str, Any], respond: _Respond) -> Any:
        """
        C{dlg_end_dlg dialog_id=<Call-ID or ID> [extra_hdrs]}
        (3.4/g_dlg_end_dlg.jsonl): "OK", then BYE both ways and E_DLG 4->5;
        an early dialog is CANCELled (2->5); unknown/ended -> 404 "Requested
        Dialog not found".
        """
        key = param_str(params, "dialog_id") or ""
        dlg = self._find_dialog(key)
        if dlg is None:
            raise MIError(404, "Requested Dialog not found")
        steps: list[tuple[float, Callable[[], None]]] = [
            (sip.END_REPLY_MS, lambda: respond.result("OK"))]
        if dlg.invite_chain is not None and dlg.state < 3:
            dlg.invite_chain.cancel()
            dlg.invite_chain = None
            steps.append((sip.END_EARLY_EVENT_MS, lambda: self._end_dialog(dlg)))
            # a click-to-dial INVITE still waiting for its answer gets 487
            waiting = False
            for pending in list(self._uac_pending.values()):
                if pending["dialog"] is dlg and not pending["done"]:
                    waiting = True
                    on_final: Callable[[_Final], None] = pending["on_final"]
                    steps.append((sip.END_EARLY_EVENT_MS, partial(
                        on_final, _Final(487, "487 Request Terminated"))))
            # not traced: a proxied INVITE (e.g. a transfer's new call) that
            # is CANCELled ends with the callee's 487, which callops reports
            # as E_CALL_TRANSFER fail (as for any final reply >= 300)
            if not waiting and dlg.invite_final is not None:
                steps.append((sip.END_EARLY_EVENT_MS, partial(
                    dlg.invite_final, _Final(487, "487 Request Terminated"))))
            dlg.invite_final = None
        else:
            steps.append((sip.END_EVENT_MS, lambda: self._end_dialog(dlg)))
        self._sched.chain(f"end_dlg {dlg.callid}", steps)
        return _ASYNC

    # ------------------------------------------------------------------
    # MI commands: tm
    # ------------------------------------------------------------------

    def _cmd_uac_dlg(self, params: dict[str, Any], respond: _Respond) -> Any:
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
        callid = _header(headers, "Call-ID", "Call-Id", "i") or \
            f"{self._ids.hex(8)}-{self._ids.hex(4)}@127.0.0.1"
        if method == "INVITE":
            self._uac_invite(respond, ruri=ruri, from_hdr=from_hdr, to_hdr=to_hdr,
                             contact=_header(headers, "Contact", "m"), callid=callid,
                             cseq=cseq, body=body)
        else:
            via_proxy = next_hop is not None or _header(headers, "Route") is not None
            self._uac_request(respond, method=method, ruri=ruri, callid=callid,
                              via_proxy=via_proxy, from_hdr=from_hdr, to_hdr=to_hdr,
                              cseq=cseq)
        return _ASYNC

    def _message(self, dlg: Dialog, final: _Final, *, method: str = "INVITE",
                 cseq: int = 1) -> str:
        """A plausible C{Message} (reply headers + body, no status line)."""
        phone = dlg.callee.phone
        lines = []
        if final.code < 300 and method == "INVITE":
            lines.append(f"Record-Route: <sip:127.0.0.1;lr;did={dlg.dialog_id}>")
        lines.append(f"Via: SIP/2.0/UDP {sip.OPENSIPS_SIP};branch={self._ids.branch()}")
        to_tag = dlg.callee.tag or ("bcaa-" + self._ids.hex(32))
        lines.append(f"To: <{dlg.to_uri}>;tag={to_tag}")
        lines.append(f"From: <{dlg.from_uri}>;tag={dlg.caller.tag}")
        lines.append(f"CSeq: {cseq} {method}")
        lines.append(f"Call-ID: {dlg.callid}")
        if final.local:
            lines.append(f"Server: {sip.SERVER_HEADER[self.version]}")
        elif phone is not None and phone.ua == "baresip":
            lines.append("Server: baresip v1.0.0 (x86_64/linux)")
        body = ""
        if final.code < 300 and method == "INVITE" and phone is not None:
            lines.append(f"Contact: <{dlg.callee.contact}>")
            lines.append("Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,"
                         "MESSAGE,REFER")
            body = dlg.callee.sdp or ""
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode('utf-8'))}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _uac_invite(self, respond: _Respond, *, ruri: str, from_hdr: str, to_hdr: str,
                    contact: str | None, callid: str, cseq: int, body: str | None) -> None:
        """
        A click-to-dial INVITE: the dialog's callee is the phone named by the
        R-URI user, its caller leg OpenSIPS' own UAC.  Result shapes from
        3.4/a_click_to_dial_success.jsonl (2xx: Status, RURI, Next-hop, Routes,
        Message), 3.4/b_click_to_dial_*.jsonl (failures: Status + Message; a
        local timeout: Status only); 18x replies only with
        C{pass_provisional_replies} (3.4/b_click_to_dial_pass_provisional_replies).
        """
        self._purge_deleted()
        dlg = self._new_dialog(callid, caller_uri=sip.strip_uri(from_hdr), caller_phone=None,
                               caller_contact=sip.strip_uri(contact) if contact else "",
                               caller_tag=_tag_of(from_hdr) or self._ids.local_tag(),
                               callee_uri=sip.strip_uri(to_hdr),
                               callee_user=sip.user_of(ruri))
        dlg.click_to_dial = True
        dlg.caller.cseq = cseq
        dlg.caller.sdp = body
        key = (callid, cseq)
        pending: dict[str, Any] = {"dialog": dlg, "respond": respond, "done": False,
                                   "t0": self.clock.seconds()}
        self._uac_pending[key] = pending

        def on_final(final: _Final) -> None:
            if pending["done"]:
                return
            pending["done"] = True
            self._uac_pending.pop(key, None)
            if final.code < 300:
                did = dlg.dialog_id
                respond.result({
                    "Status": final.status, "RURI": dlg.callee.contact,
                    "Next-hop": f"sip:127.0.0.1;lr;did={did}",
                    "Routes": [f"<sip:127.0.0.1;lr;did={did}>"],
                    "Message": self._message(dlg, final, cseq=cseq)})
            elif final.message:
                respond.result({"Status": final.status,
                                "Message": self._message(dlg, final, cseq=cseq)})
            else:
                respond.result({"Status": final.status})

        def on_ringing() -> None:
            if self.pass_provisional_replies and not pending["done"]:
                respond.result({"Status": "180 Ringing",
                                "Message": self._message(dlg, _Final(180, "180 Ringing"),
                                                         cseq=cseq)})

        pending["chain"] = self._route_invite(dlg, start_ms=0.0, ack_ms=sip.LOCAL_ACK_MS,
                                              on_final=on_final, on_ringing=on_ringing)
        pending["on_final"] = on_final

    def _uac_request(self, respond: _Respond, *, method: str, ruri: str, callid: str,
                     via_proxy: bool, from_hdr: str, to_hdr: str, cseq: int) -> None:
        """
        A non-INVITE t_uac_dlg (the Go Call API's BYE,
        3.4/a_click_to_dial_bye_variants.jsonl): straight to the R-URI the
        phone answers 200 if it still has the call, else 481 ("Call Does Not
        Exist", 3.4/a_click_to_dial_success.jsonl id 6) and the OpenSIPS
        dialog is untouched (stale); through the proxy (C{next_hop} or a
        C{Route} header) a BYE also ends the dialog (E_DLG 4->5).
        """
        dlg = self.dialogs.get(callid)
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
            steps.append((sip.NO_ANSWER_NON_INVITE_MS,
                          lambda: respond.result({"Status": "408 Request Timeout"})))
            self._sched.chain(f"uac {method} {callid}", steps)
            return
        reply_ms = phone.timing["bye"]
        has_call = leg is not None and leg.alive and dlg is not None
        if via_proxy and method == "BYE" and dlg is not None and dlg.active:
            d = dlg
            steps.append((sip.PROXY_BYE_EVENT_MS, lambda: self._end_dialog(d)))
        if has_call:
            status = "200 Ok" if phone.ua == "linphone" else "200 OK"
            if method == "BYE":
                assert leg is not None
                leg.alive = False
        else:
            status = "481 Call Does Not Exist"

        def send() -> None:
            msg = (self._message(dlg, _Final(int(status.split()[0]), status),
                                 method=method, cseq=cseq)
                   if dlg is not None else
                   f"Call-ID: {callid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n")
            respond.result({"Status": status, "Message": msg})

        steps.append((reply_ms, send))
        self._sched.chain(f"uac {method} {callid}", steps)

    def _phone_by_contact(self, uri: str) -> Phone | None:
        for user, (_, phone) in self._phones.items():
            if phone.contact_for(user) == uri:
                return phone
        return None

    def _cmd_uac_cancel(self, params: dict[str, Any], respond: _Respond) -> Any:
        """
        C{t_uac_cancel callid cseq} (3.4/b_click_to_dial_cancel.jsonl): "OK"
        at once, the callee is CANCELled (2->5), but the looped 487 never
        reaches the local transaction: the t_uac_dlg request gets
        C{{"Status": "408 Request Timeout"}} after fr_inv_timeout.  Unknown
        -> 481 "No such transaction" (4.0/which_and_meta.jsonl id 40).
        """
        callid = param_str(params, "callid") or ""
        cseq = param_int(params, "cseq") or 0
        pending = self._uac_pending.get((callid, cseq))
        if pending is None or pending["done"]:
            raise MIError(481, "No such transaction")
        dlg: Dialog = pending["dialog"]
        if dlg.invite_chain is not None:
            dlg.invite_chain.cancel()
            dlg.invite_chain = None
        elapsed_ms = (self.clock.seconds() - pending.get("t0", self.clock.seconds())) * 1000.0
        self._sched.chain(f"uac_cancel {callid}", [
            (sip.UAC_CANCEL_EVENT_MS, lambda: self._end_dialog(dlg)),
            (max(sip.UAC_CANCEL_EVENT_MS, sip.UAC_CANCEL_408_MS - elapsed_ms),
             lambda: pending["on_final"](_Final(408, "408 Request Timeout", local=True,
                                                message=False))),
        ])
        return "OK"

    # ------------------------------------------------------------------
    # MI commands: callops hold / unhold
    # ------------------------------------------------------------------

    def _cmd_hold(self, params: dict[str, Any], respond: _Respond, action: str) -> Any:
        """
        C{call_hold} / C{call_unhold} (callops) with E_CALL_HOLD events.

        3.4 (3.4/f_hold_unhold.jsonl, 3.4/f_hold_early_and_click_to_dial.jsonl):
        hold re-INVITEs every leg not yet marked (caller first), marking it
        when the re-INVITE is sent; unhold re-INVITEs the marked legs (callee
        first).  Events: C{start} per leg, the MI reply "OK" after the starts,
        then C{ok} or C{fail} per leg (a leg that answers 488, like OpenSIPS'
        own click-to-dial caller leg, gets C{fail}; the reply is still "OK").
        Errors: 404 "Dialog not found", 410 "Dialog not ready" (early),
        480 "Both dialog legs are on hold" / "No dialog legs on hold".

        4.0 (4.0/f_hold_per_leg.jsonl, 4.0/f_hold_per_leg_click_to_dial.jsonl,
        4.0/f_hold_early_and_click_to_dial.jsonl): optional C{leg}
        (caller|callee|both, else 420 "Bad leg") and C{headers}.  Each SIP leg
        remembers which legs' hold its last *accepted* re-INVITE expressed
        (marked on the 2xx, not when sent): hold re-INVITEs the legs whose
        state changes (480 if none), unhold re-INVITEs the legs with any hold
        (480 if none) and clears only the requested leg.  Overlapping holds
        both run, and the UAs' retransmitted 200s raise extra C{ok} events.
        """
        callid = param_str(params, "callid") or ""
        requested = {"caller", "callee"}
        headers: dict[str, str] = {}
        if "leg" in params:
            try:
                leg_value = param_str(params, "leg")
            except MIError:
                raise MIError(420, "Bad leg")
            if leg_value not in ("caller", "callee", "both"):
                raise MIError(420, "Bad leg")
            if leg_value != "both":
                requested = {leg_value}
        if "headers" in params:
            raw = params["headers"]
            if isinstance(raw, str):
                headers = {"caller": raw, "callee": raw}
            elif isinstance(raw, list) and len(raw) == 2 and all(
                    isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in raw):
                headers = {"caller": str(raw[0]), "callee": str(raw[1])}
            else:
                raise invalid_params("Bad type for parameter 'headers'")
            headers = {k: v.replace("\\r\\n", "\r\n") for k, v in headers.items()}
        dlg = self.dialogs.get(callid)
        if dlg is None or not dlg.active:
            raise MIError(404, "Dialog not found")
        if dlg.state < 3:
            raise MIError(410, "Dialog not ready")
        mark_on_send = self.version != "4.0"
        targets: list[tuple[Leg, frozenset[str]]] = []
        if action == "hold":
            for leg in (dlg.caller, dlg.callee):
                if mark_on_send:
                    if not leg.hold:
                        targets.append((leg, frozenset(requested)))
                else:
                    new = leg.hold | requested
                    if new != leg.hold:
                        targets.append((leg, frozenset(new)))
            if not targets:
                raise MIError(480, "Both dialog legs are on hold")
        else:
            if not (dlg.caller.hold or dlg.callee.hold):
                raise MIError(480, "No dialog legs on hold")
            for leg in (dlg.callee, dlg.caller):
                if leg.hold:
                    new = frozenset() if mark_on_send else leg.hold - requested
                    targets.append((leg, frozenset(new)))
        starts = sip.HOLD_START_MS if action == "hold" else sip.UNHOLD_START_MS
        reply_ms = sip.HOLD_REPLY_MS if action == "hold" else sip.UNHOLD_REPLY_MS
        steps: list[tuple[float, Callable[[], None]]] = []
        for index, (leg, new_state) in enumerate(targets):
            start_ms = starts[index]
            if mark_on_send:
                leg.hold = new_state
            outcome, answer_ms = self._reinvite_outcome(leg, headers.get(leg.role, ""),
                                                        action)
            if leg.role == "caller":
                dlg.callee.cseq += 1
            else:
                dlg.caller.cseq += 1
            if not mark_on_send and leg.reinvites_pending > 0:
                self._retransmitted_oks(dlg, leg, action)
            leg.reinvites_pending += 1
            steps.append((start_ms, self._hold_event(dlg, leg.role, action, "start")))
            steps.append((start_ms + answer_ms,
                          self._hold_done(dlg, leg, action, outcome, new_state,
                                          mark=not mark_on_send)))
        last_start = starts[len(targets) - 1]
        steps.append((max(reply_ms, last_start + 0.2), lambda: respond.result("OK")))
        self._sched.chain(f"{action} {callid}", steps)
        return _ASYNC

    def _reinvite_outcome(self, leg: Leg, headers: str, action: str) -> tuple[str, float]:
        if leg.is_local or leg.phone is None:
            return "fail", sip.LOCAL_REINVITE_MS
        if headers and not headers.endswith("\r\n"):
            return "fail", sip.MALFORMED_REINVITE_MS
        answer = (leg.phone.timing["reinvite"] if action == "hold"
                  else sip.UNHOLD_ANSWER_MS)
        if not leg.alive or not leg.phone.hold_ok:
            return "fail", answer
        return "ok", answer

    def _hold_event(self, dlg: Dialog, role: str, action: str,
                    state: str) -> Callable[[], None]:
        def step() -> None:
            self._raise("E_CALL_HOLD", {"callid": dlg.callid, "leg": role,
                                        "action": action, "state": state})
        return step

    def _hold_done(self, dlg: Dialog, leg: Leg, action: str, outcome: str,
                   new_state: frozenset[str], mark: bool) -> Callable[[], None]:
        def step() -> None:
            leg.reinvites_pending = max(0, leg.reinvites_pending - 1)
            if not dlg.active:
                return
            if outcome == "ok" and mark:
                leg.hold = new_state
            self._raise("E_CALL_HOLD", {"callid": dlg.callid, "leg": leg.role,
                                        "action": action, "state": outcome})
        return step

    def _retransmitted_oks(self, dlg: Dialog, leg: Leg, action: str) -> None:
        """4.0/f_hold_per_leg.jsonl ids 28/29: the first re-INVITE's 200 is
        ACKed with the second's CSeq, the UA retransmits it and each
        retransmission raises another C{ok}."""
        self._sched.chain(f"retransmit {dlg.callid} {leg.role}", [
            (sip.HOLD_START_MS[1] + offset,
             self._hold_event(dlg, leg.role, action, "ok"))
            for offset in sip.RETRANSMIT_OK_MS])

    # ------------------------------------------------------------------
    # MI commands: callops transfer
    # ------------------------------------------------------------------

    def _cmd_transfer(self, params: dict[str, Any], respond: _Respond) -> Any:
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
        if "transfer_fromtag" in params:
            raise server_error()
        callid = param_str(params, "callid") or ""
        leg_name = param_str(params, "leg")
        if leg_name not in ("caller", "callee"):
            if self.version == "4.0":
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
            dlg2 = self.dialogs.get(param_str(params, "transfer_callid") or "")
            if dlg2 is None or not dlg2.active:
                raise MIError(404, "Transfer dialog not found")
        dlg = self.dialogs.get(callid)
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
        _Transfer(self, dlg, leg_name, transferee, destination, respond,
                  dlg2=dlg2, tleg_name=tleg_name).run()
        return _ASYNC


class _Transfer:
    """
    One call_transfer in flight: the transferee's reaction to the REFER and
    the E_CALL_TRANSFER events callops raises for it.
    """

    def __init__(self, emu: OpenSIPSEmulator, dlg: Dialog, leg_name: str, transferee: Leg,
                 destination: str, respond: _Respond, *, dlg2: Dialog | None,
                 tleg_name: str | None) -> None:
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
        reply = lambda: self.respond.result("Accepted")  # noqa: E731
        if (phone is None or not self.transferee.alive or phone.refer == "reject"
                or self.dlg.state < 3):
            # REFER refused (501, or an early dialog: not traced) or never
            # answered: nothing but "Accepted"
            # (3.4/d_blind_transfer_refer_rejected.jsonl)
            self.chain.add(sip.TRANSFER_REPLY_MS, reply)
            return
        mode = phone.refer
        if mode == "lost_race" or (self.attended and mode == "baresip"):
            # 3.4/d_blind_transfer_caller_success.jsonl (BYE first, INVITE
            # not linked) and 3.4/e_attended_transfer_baresip.jsonl (no
            # Replaces header): a new call, no E_CALL_TRANSFER at all
            if mode == "lost_race":
                bye_ms, invite_ms = sip.LOST_RACE_BYE_MS, sip.LOST_RACE_INVITE_MS
            else:
                bye_ms, invite_ms = sip.NO_REPLACES_BYE_MS, sip.NO_REPLACES_INVITE_MS
            self.chain.add(sip.TRANSFER_REPLY_MS, reply)
            if phone.hangs_up_after_transfer or mode == "lost_race":
                self.chain.add(bye_ms, self._hangup_old)
            self.chain.add(invite_ms, lambda: self._new_call(linked=False))
            return
        delay = emu._notify_delay
        target_known = sip.user_of(self.destination) in emu._phones
        if mode == "baresip":
            invite_ms = sip.BARESIP_INVITE_MS
            if not target_known:
                invite_ms = sip.UNKNOWN_TARGET_START_MS
            if delay > 0:
                self.chain.add(sip.BARESIP_NOTIFY_MS + delay,
                               lambda: self._notify("100 Trying"))
            elif phone.hangs_up_after_transfer:
                self.chain.add(sip.BARESIP_BYE_MS if target_known
                               else sip.UNKNOWN_TARGET_START_MS + 0.7, self._hangup_old)
        else:  # linphone
            invite_ms = (sip.LINPHONE_ATTENDED_INVITE_MS if self.attended
                         else sip.LINPHONE_INVITE_MS)
            self.chain.add(invite_ms + sip.LINPHONE_NOTIFY_TRYING_MS,
                           lambda: self._notify("100 Trying"))
        if target_known:
            self.chain.add(sip.TRANSFER_REPLY_MS, reply)
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

    def _xfer(self, dlg: Dialog, leg: str, state: str, status: str,
              destination: str | None = None) -> None:
        assert self.new is not None
        self.emu._raise("E_CALL_TRANSFER", {
            "callid": dlg.callid, "leg": leg, "transfer_callid": self.new.callid,
            "destination": self.destination if destination is None else destination,
            "state": state, "status": status})

    def _notify(self, status: str) -> None:
        """C{notify}: only for the call that got the REFER; C{leg} empty once
        the transfer ended, C{destination} always empty
        (3.4/README.md "E_CALL_TRANSFER")."""
        if self.new is None:
            return
        self._xfer(self.dlg, "" if self.ended else self.leg_name, "notify", status,
                   destination="")

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
            near, far = ((d2.callee, d2.caller) if self.tleg_name == "callee"
                         else (d2.caller, d2.callee))
            to_uri = (f"{self.destination}?Replaces={d2.callid}?to-tag?{near.tag}"
                      f"?from-tag?{far.tag}")
        callid = emu._ids.callid(phone.ua)
        new = emu._new_dialog(callid, caller_uri=from_uri, caller_phone=phone_uri,
                              caller_contact=phone.contact_for(user),
                              caller_tag=emu._ids.tag(phone.ua), callee_uri=to_uri,
                              callee_user=sip.user_of(self.destination))
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
                    answer_ms = sip.REPLACES_ANSWER_MS
                    dlg2 = self.dlg2

                    def ring_extra() -> None:
                        # the target honours Replaces: BYE to the replaced call
                        emu._sched.chain(f"replaces {dlg2.callid}", [
                            (sip.REPLACES_BYE_MS, partial(emu._hangup_if_active, dlg2))])
            else:
                # 3.4 and 4.0 blind transfers: ``leg`` carries the new Call-ID
                self._xfer(self.dlg, callid, "start", "")
        emu._route_invite(new, start_ms=0.0, ack_ms=phone.timing["ack"],
                          on_final=(self._final if linked else (lambda f: None)),
                          answer_ms=answer_ms, on_ring_extra=ring_extra,
                          unknown_ms=sip.TRANSFER_UNKNOWN_USER_MS)

    def _final(self, final: _Final) -> None:
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
            emu._sched.chain(f"notify {self.dlg.callid}", [
                (sip.LINPHONE_NOTIFY_FINAL_MS, lambda: self._notify(sipfrag))])
        elif emu._notify_delay > 0:
            delay = emu._notify_delay
            sipfrag = "200 OK" if state == "ok" else final.status
            wait = (sip.BARESIP_NOTIFY_OK_MS if state == "ok" else 0.0) + delay
            emu._sched.chain(f"notify {self.dlg.callid}", [
                (wait, lambda: self._notify(sipfrag))])


def add_default_phones(emulator: OpenSIPSEmulator) -> None:
    """Same as L{OpenSIPSEmulator.add_default_phones} (idempotent)."""
    emulator.add_default_phones()


def _valid_socket(socket: str) -> bool:
    """event_datagram accepts C{udp:host:port} and C{unix:/path} only
    (3.4/h_errors.jsonl id 10: C{tcp:} -> 400)."""
    if socket.startswith("unix:"):
        return len(socket) > len("unix:")
    if not socket.startswith("udp:"):
        return False
    host, _, port = socket[4:].rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


# ---------------------------------------------------------------------------
# Sockets
# ---------------------------------------------------------------------------

class _MIProtocol(DatagramProtocol):
    """Thin shell: each datagram goes to the emulator, replies go back to
    the request's source address (3.4/README.md "MI datagram transport")."""

    _log = logger()

    def __init__(self, emulator: OpenSIPSEmulator) -> None:
        self.emulator = emulator

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        def reply(data: bytes) -> None:
            transport = self.transport
            if transport is None:
                return
            try:
                transport.write(data, addr)
            except OSError as e:
                self._log.warn("MI: cannot answer {addr}: {error}", addr=addr,
                               error=str(e))

        self.emulator.handle_datagram(datagram, reply)


class _EventSender(DatagramProtocol):
    """The emulator's own event socket (event_datagram sends from its own
    sockets, 3.4/README.md "Events in general")."""

    _log = logger()

    def __init__(self) -> None:
        self._unix: Any = None

    def send(self, socket: str, datagram: bytes) -> None:
        try:
            if socket.startswith("udp:"):
                host, _, port = socket[4:].rpartition(":")
                if self.transport is not None:
                    self.transport.write(datagram, (host, int(port)))
            elif socket.startswith("unix:"):
                self._send_unix(socket[5:], datagram)
        except Exception as e:  # OSError, or InvalidAddressError for a host name
            self._log.warn("EVI: cannot send to {socket}: {error}", socket=socket,
                           error=str(e))

    def _send_unix(self, path: str, datagram: bytes) -> None:
        import socket as _socket
        if self._unix is None:
            self._unix = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            self._unix.setblocking(False)
        self._unix.sendto(datagram, path)

    def close_unix(self) -> None:
        if self._unix is not None:
            self._unix.close()
            self._unix = None


@attr.s(auto_attribs=True, eq=False)
class RunningEmulator:
    """What L{start_emulator} returns."""

    emulator: OpenSIPSEmulator
    mi_address: tuple[str, int]
    _ports: list[Any]
    _sender: _EventSender

    def stop(self) -> Deferred[None]:
        """Cancel the emulator's timers and close its sockets."""
        self.emulator.stop()
        self._sender.close_unix()
        ds = [maybeDeferred(p.stopListening) for p in self._ports]
        return gatherResults(ds).addCallback(lambda _: None)


def start_emulator(reactor: Any, host: str = "127.0.0.1", port: int = 0,
                   version: str = "3.4", delay_scale: float = 1.0, *,
                   phones: Mapping[str, Phone] | None = None,
                   pass_provisional_replies: bool = False,
                   seed: int | None = None) -> RunningEmulator:
    """
    Listen for MI datagrams on C{host:port} (UDP, 0 = any free port) and send
    events from a socket of its own.  Synchronous.

    @param phones: the reachable users; default: the harness phones
        (L{default_phones}).
    """
    sender = _EventSender()
    emulator = OpenSIPSEmulator(reactor, sender.send, version=version,
                                delay_scale=delay_scale,
                                pass_provisional_replies=pass_provisional_replies,
                                seed=seed)
    for uri, phone in (default_phones() if phones is None else phones).items():
        emulator.add_phone(uri, phone)
    mi_port = reactor.listenUDP(port, _MIProtocol(emulator), interface=host,
                                maxPacketSize=65535)
    # a burst of MI requests must not overflow the default ~208 KiB buffer
    # (a real mi_datagram socket needs the same: docs/opensips.md)
    try:
        import socket as _socket
        mi_port.getHandle().setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    event_port = reactor.listenUDP(0, sender, interface=host, maxPacketSize=65535)
    address = mi_port.getHost()
    logger("callapi.emulator").info(EMULATOR_BANNER + " - MI on udp:{host}:{port}", version=version,
                  host=address.host, port=address.port)
    return RunningEmulator(emulator, (address.host, address.port), [mi_port, event_port],
                           sender)


# ---------------------------------------------------------------------------
# Standalone
# ---------------------------------------------------------------------------

def _parse_mi(spec: str) -> tuple[str, int]:
    if not spec.startswith("udp:"):
        raise ValueError("--mi must look like udp:HOST:PORT")
    host, _, port = spec[4:].rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """C{python -m callapi.emulator --mi udp:127.0.0.1:8080 ...}"""
    import argparse

    from twisted.logger import globalLogBeginner, textFileLogObserver

    parser = argparse.ArgumentParser(
        prog="python -m callapi.emulator",
        description="OpenSIPS EMULATOR for callapi tests and demos (not a real OpenSIPS).")
    parser.add_argument("--mi", default="udp:127.0.0.1:8080",
                        help="MI datagram socket, udp:HOST:PORT (default %(default)s)")
    parser.add_argument("--version", default="3.4", choices=["3.4", "4.0"],
                        help="OpenSIPS version to imitate (default %(default)s)")
    parser.add_argument("--delay-scale", type=float, default=1.0,
                        help="multiply every trace-derived delay (0 = as fast as possible)")
    parser.add_argument("--demo-calls", type=int, default=0,
                        help="set up N confirmed calls between the default phones")
    parser.add_argument("--pass-provisional-replies", action="store_true")
    args = parser.parse_args(argv)
    host, port = _parse_mi(args.mi)

    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                     redirectStandardIO=False)
    running = start_emulator(reactor, host, port, args.version, args.delay_scale,
                             pass_provisional_replies=args.pass_provisional_replies)
    emu = running.emulator
    pairs = [("alice", "bob"), ("alice", "dave"), ("cindy", "erin"), ("bob", "cindy"),
             ("dave", "erin"), ("cindy", "alice"), ("erin", "bob"), ("bob", "dave")]
    callids = []
    for i in range(max(0, args.demo_calls)):
        a, b = pairs[i % len(pairs)]
        callids.append((a, b, emu.add_call(f"sip:{a}@127.0.0.1", f"sip:{b}@127.0.0.1")))
    print(EMULATOR_BANNER.format(version=args.version)
          + f"; MI on udp:{running.mi_address[0]}:{running.mi_address[1]}", flush=True)
    for a, b, callid in callids:
        print(f"demo call {a} -> {b}: Call-ID {callid}", flush=True)
    reactor.run()  # type: ignore[attr-defined,misc,unused-ignore]
    return 0


if __name__ == "__main__":
    sys.exit(main())
