"""
The emulated OpenSIPS: L{OpenSIPSEmulator}, the MI dispatch and the dialog
table (the C{dialog} module's dialogs, their states and E_DLG_STATE_CHANGED,
C{dlg_list}, C{dlg_list_ctx}, C{dlg_end_dlg}).  It is NOT a real OpenSIPS.

It answers the Management Interface (JSON-RPC over datagrams, module
C{mi_datagram}) and raises EVI events (module C{event_datagram}) the way a
real OpenSIPS 3.4.18 or 4.0.1 with the C{tm}, C{dialog} and C{callops}
modules did in the reference captures under
C{../shared/opensips-traces/{3.4,4.0}} (the "traces"), for calls between
simulated phones (L{Phone}).  Every behaviour names the trace it follows;
the replay test C{tests/test_emulator_traces.py} checks the emulator
against those traces.  Traces followed here: C{3.4/h_errors.jsonl},
C{4.0/h_errors.jsonl}, C{4.0/h_mi_crash.jsonl} (transport),
C{3.4/i_dlg_list.jsonl}, C{3.4/g_dlg_end_dlg.jsonl} (dialog module),
C{3.4/f_hold_unhold.jsonl} and C{3.4/a_click_to_dial_success.jsonl} (phone
calls and hang-ups).

One object per concern, owned by the emulator, answers the rest:
L{callapi.emulator.events} (EVI), L{callapi.emulator.meta} (C{which},
C{version}, ..., shared variables), L{callapi.emulator.invite} (the proxied
INVITE), L{callapi.emulator.uac} (C{t_uac_dlg}), L{callapi.emulator.hold},
L{callapi.emulator.transfer}, L{callapi.emulator.restart}; faults: L{Faults}.
They use the emulator's underscore members (scheduler, ids, dialog table):
those are this package's internals, not API.

Use it in unit tests with a L{twisted.internet.task.Clock}::

    sent, replies = [], []
    emu = OpenSIPSEmulator(clock, lambda socket, data: sent.append((socket, data)))
    emu.add_default_phones()
    callid = emu.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
    clock.advance(1)                      # 1->2, 2->3, 3->4
    emu.handle_datagram(b'{"jsonrpc":"2.0","method":"call_hold","id":1,'
                        b'"params":{"callid":"%s"}}' % callid.encode(), replies.append)
    clock.advance(1)                      # E_CALL_HOLD start/ok, reply "OK"

or on real sockets with L{callapi.emulator.sockets.start_emulator}, or
standalone (L{callapi.emulator.cli})::

    python -m callapi.emulator --mi udp:127.0.0.1:8080 [--version 4.0]
        [--delay-scale 1] [--demo-calls N] [fault options, see cli]
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import IReactorTime

from callapi.emulator import sip, timings
from callapi.emulator.dialogs import DialogCommands
from callapi.emulator.events import DEFAULT_EXPIRE, EventInterface, SubscriptionInfo
from callapi.emulator.faults import FaultDice, Faults
from callapi.emulator.hold import Hold
from callapi.emulator.invite import Invites
from callapi.emulator.meta import CoreCommands, SharedVariables
from callapi.emulator.mi_table import (
    ASYNC,
    PARSE_ERROR,
    CommandTable,
    Handler,
    MIError,
    Respond,
    encode_error,
    match_recipe,
)
from callapi.emulator.restart import Restarts
from callapi.emulator.scheduler import Scheduler
from callapi.emulator.sip import Dialog, Leg, Phone, default_phones
from callapi.emulator.transfer import Transfers
from callapi.emulator.uac import UAC
from callapi.logging import logger

__all__ = ["OpenSIPSEmulator", "add_default_phones"]


def _finite_float(text: str) -> float:
    """JSON numbers that overflow a double are not JSON we could echo back."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"not JSON: {text}")


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
    @param faults: the faults to inject (L{Faults}: MI datagram loss, lost
        events, the NOTIFY race, automatic restarts); default: none, the
        behaviour of the traces.
    """

    _log = logger()

    def __init__(
        self,
        clock: IReactorTime,
        send_event: Callable[[str, bytes], None],
        version: str = "3.4",
        delay_scale: float = 1.0,
        *,
        pass_provisional_replies: bool = False,
        seed: int | None = None,
        faults: Faults | None = None,
    ) -> None:
        if version not in ("3.4", "4.0"):
            raise ValueError("version must be '3.4' or '4.0'")
        self.clock = clock
        self.version = version
        self.pass_provisional_replies = pass_provisional_replies
        self._sched = Scheduler(clock, delay_scale)
        self._rng = random.Random(seed)
        self._ids = sip.IdFactory(self._rng)
        self._table = CommandTable(version)
        self._dice = FaultDice(faults or Faults(), seed)
        self._restarts = Restarts(self)
        self._evi = EventInterface(clock, version, send_event, self._restarts.lose_event)
        self._shv = SharedVariables()
        self._phones: dict[str, tuple[str, Phone]] = {}
        self.dialogs: dict[str, Dialog] = {}
        #: (h_entry, h_id) -> dialog, deleted ones included until purged
        self._by_dialog_id: dict[tuple[int, int], Dialog] = {}
        self._ended: collections.deque[Dialog] = collections.deque()
        self._seq = 0
        self._invites = Invites(self)
        self._uac = UAC(self)
        self._handlers: dict[str, Handler] = {}
        self._core = CoreCommands(clock, version, self._table, self._wall)
        for part in (
            self._core,
            self._evi,
            self._shv,
            self._uac,
            Hold(self),
            Transfers(self),
            DialogCommands(self),
        ):
            self._handlers.update(part.commands())
        self._restarts.schedule()

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
        self._restarts.stop()

    # -- fault injection (docs/emulator.md "Fault injection") ----------

    @property
    def faults(self) -> Faults:
        """The faults in force (L{Faults}); assign a new one to change them
        mid-run (e.g. stop the loss so that cleanup can finish)."""
        return self._dice.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._dice.faults = faults
        self._restarts.reschedule()

    @property
    def fault_counts(self) -> dict[str, int]:
        """Faults so far: C{{"mi_request": n, "mi_reply": n, "event": n, "notify_race": n}}."""
        return dict(self._dice.counts)

    @property
    def up(self) -> bool:
        """C{False} while a restart keeps OpenSIPS down (L{restart})."""
        return not self._restarts.down

    def live_dialogs(self) -> list[tuple[str, str, int]]:
        """C{(Call-ID, dialog ID, state)} of every dialog in state 1-4, in
        C{dlg_list} order (tests check that no call is left behind)."""
        return [(d.callid, d.dialog_id, d.state) for d in self._listed() if d.active]

    def restart(self, forget_dialogs: bool | None = None, downtime: float | None = None) -> None:
        """OpenSIPS restarts now: L{Restarts.restart} (defaults from L{faults})."""
        self._restarts.restart(forget_dialogs, downtime)

    @property
    def restarts(self) -> int:
        """How many restarts happened so far."""
        return self._restarts.count

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
        """URI -> L{Phone} of every reachable user."""
        return dict(self._phones.values())

    @property
    def subscribers(self) -> dict[tuple[str, str], SubscriptionInfo]:
        """(event, socket) -> L{SubscriptionInfo}, expired ones included until
        they are purged (by raising that event)."""
        return self._evi.subscribers

    def subscribe(self, event: str, socket: str, expire: int = DEFAULT_EXPIRE) -> None:
        """Subscribe as C{event_subscribe} would (no validation)."""
        self._evi.subscribe(event, socket, expire)

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
        if self._restarts.down:
            raise RuntimeError("OpenSIPS is down (restart in progress)")
        curi, cphone = self._phones[sip.user_of(caller_uri)]
        if callid is None:
            callid = self._ids.callid(cphone.ua)
        self._purge_deleted()
        dlg = self._new_dialog(
            callid,
            caller_uri=curi,
            caller_phone=curi,
            caller_contact=cphone.contact_for(sip.user_of(curi)),
            caller_tag=self._ids.tag(cphone.ua),
            callee_uri=callee_uri,
        )
        dlg.caller.cseq = self._ids.cseq()
        dlg.caller.sdp = sip.phone_sdp(sip.user_of(curi), self._rng)
        self._invites.route(
            dlg, start_ms=timings.DIAL_MS, ack_ms=cphone.timing["ack"], on_final=lambda final: None
        )
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
        if self._restarts.down:
            raise RuntimeError("OpenSIPS is down (restart in progress)")
        if dlg.state >= 3:
            self._sched.chain(f"hangup {callid}", [(timings.HANGUP_MS, lambda: self._end_dialog(dlg))])
        else:
            if dlg.invite_chain is not None:
                dlg.invite_chain.cancel()
            self._sched.chain(f"cancel {callid}", [(timings.CANCEL_MS, lambda: self._end_dialog(dlg))])

    def handle_datagram(self, data: bytes, reply: Callable[[bytes], None]) -> None:
        """
        One MI request datagram in; C{reply(datagram)} zero or more times,
        now or later.  Transport rules from 3.4/h_errors.jsonl and
        4.0/h_errors.jsonl, 4.0/h_mi_crash.jsonl.  Faults (L{Faults}): dropped
        while down or lost (C{mi_request_loss}), replies too (C{mi_reply_loss}).
        """
        if self._restarts.down:
            self._log.debug("MI request dropped: OpenSIPS is down (restart)")
            return
        if self._dice.lose_request():
            self._log.debug("MI request LOST (fault injection)")
            return
        reply = self._restarts.guard_reply(reply)
        self._purge_deleted()
        try:
            request = json.loads(data.decode("utf-8"), parse_float=_finite_float, parse_constant=_no_constant)
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
        respond = Respond(reply if has_id else None, request_id, method if isinstance(method, str) else "")
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
            self._log.debug(
                "MI {mi_method} id={mi_id} -> error {code} {message}",
                mi_method=method,
                mi_id=request_id,
                code=e.code,
                message=e.message,
            )
            respond.error(e)
            return
        except Exception:
            # a bug in the emulator, not bad input: say so, keep serving
            self._log.failure("MI {mi_method} id={mi_id}: emulator bug", mi_method=method, mi_id=request_id)
            respond.error(MIError(500, "Internal error in the OpenSIPS emulator"))
            return
        if result is not ASYNC:
            respond.result(result)

    # ------------------------------------------------------------------
    # internals: time, the 4.0.1 crash
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
            what=what,
        )

    def _wall(self) -> int:
        """Epoch seconds for dlg_list C{timestart}: the clock if it looks
        like wall time, else the trace era plus the clock."""
        now = self.clock.seconds()
        return int(now) if now > 1e9 else int(1_796_000_000 + now)

    # ------------------------------------------------------------------
    # internals: dialogs
    # ------------------------------------------------------------------

    def _new_dialog(
        self,
        callid: str,
        *,
        caller_uri: str,
        caller_phone: str | None,
        caller_contact: str,
        caller_tag: str | None,
        callee_uri: str,
        callee_user: str | None = None,
    ) -> Dialog:
        """A new dialog in state 1, callee the phone of C{callee_user} (or C{callee_uri})."""
        entry, hid = self._ids.dialog_ids(callid)
        known = self._phones.get(sip.user_of(caller_phone)) if caller_phone else None
        cphone = known[1] if known else None
        target = self._phones.get(callee_user if callee_user is not None else sip.user_of(callee_uri))
        caller = Leg("caller", caller_uri, caller_phone, cphone, contact=caller_contact, tag=caller_tag)
        callee = Leg("callee", callee_uri, target[0] if target else None, target[1] if target else None)
        self._seq += 1
        dlg = Dialog(callid, entry, hid, caller, callee, created_seq=self._seq)
        self.dialogs[callid] = dlg
        self._by_dialog_id[(dlg.h_entry, dlg.h_id)] = dlg
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
        while ended and now - cast(float, ended[0].ended_at) > timings.DELETED_LINGER_S:
            dlg = ended.popleft()
            if self.dialogs.get(dlg.callid) is dlg:
                del self.dialogs[dlg.callid]
            if self._by_dialog_id.get((dlg.h_entry, dlg.h_id)) is dlg:
                del self._by_dialog_id[(dlg.h_entry, dlg.h_id)]

    def _find_dialog(self, key: str) -> Dialog | None:
        """C{dlg_end_dlg}'s lookup in OpenSIPS' order (C{get_dlg_by_dialog_id},
        modules/dialog/dlg_hash.c, 3.4 and 4.0): a key of the ID shape
        (L{sip.parse_dialog_id}) as C{h_entry.h_id} first; if no dialog has
        that ID or it is deleted (C{lookup_dlg(.., active_only=1)}), as a
        Call-ID.  A Call-ID shaped like another live dialog's ID ends that
        other dialog.  Both forms: 3.4/g_dlg_end_dlg.jsonl id 11."""
        ids = sip.parse_dialog_id(key)
        if ids is not None:
            dlg = self._by_dialog_id.get(ids)
            if dlg is not None and dlg.active:
                return dlg
        dlg = self.dialogs.get(key)
        if dlg is not None and dlg.active:
            return dlg
        return None

    def _set_state(self, dlg: Dialog, new: int) -> None:
        """Move C{dlg} to state C{new} and raise E_DLG_STATE_CHANGED
        (3.4/f_hold_unhold.jsonl); a deleted dialog (5) stays deleted."""
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
        self._evi.raise_event(
            "E_DLG_STATE_CHANGED",
            {
                "id": dlg.dialog_id,
                "db_id": dlg.db_id,
                "callid": dlg.callid,
                "from_tag": dlg.caller.tag,
                "to_tag": dlg.callee.tag,
                "old_state": old,
                "new_state": new,
            },
        )

    def _hangup_if_active(self, dlg: Dialog) -> None:
        if dlg.active:
            self._end_dialog(dlg)

    def _end_dialog(self, dlg: Dialog) -> None:
        if dlg.invite_chain is not None:
            dlg.invite_chain.cancel()
            dlg.invite_chain = None
        self._set_state(dlg, 5)

    # ------------------------------------------------------------------
    # MI commands: dialog module
    # ------------------------------------------------------------------

    def _listed(self) -> list[Dialog]:
        """dlg_list order: by hash entry, then creation (3.4/i_dlg_list.jsonl
        lists C{203.*}, C{a89.*}, C{bca.*}: entries 0x302 < 0x98a < 0xacb)."""
        return sorted(self.dialogs.values(), key=lambda d: (d.h_entry, d.created_seq))


def add_default_phones(emulator: OpenSIPSEmulator) -> None:
    """Same as L{OpenSIPSEmulator.add_default_phones} (idempotent)."""
    emulator.add_default_phones()
