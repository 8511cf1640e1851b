"""
The registry of the proxy's dialogs (L{callapi.interfaces.IDialogRegistry}).

Loaded with paged C{dlg_list} (C{index}/C{counter}, reply C{{"count": N,
"Dialogs": [...]}}, 3.4 README "dlg_end_dlg / dlg_list", trace
C{3.4/i_dlg_list}; 4.0 name C{dialog:list}) when the daemon (re)connects
and every C{sweep_interval} seconds; kept current from every
E_DLG_STATE_CHANGED (states 1-5), E_CALL_HOLD and E_CALL_TRANSFER seen by
the event hub (L{callapi.opensips.events.EventHub.observe}); checked one
dialog at a time with C{dlg_list callid=} (reply C{{"Dialog": {...}}}, 404
"No such dialog") where it could be stale.

Bounds: ended dialogs linger C{linger} seconds, then are dropped; at most
C{cap} records are held (new dialogs beyond it are not tracked and counted
in C{stats["over_cap"]}; ended ones are dropped first).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from callapi.errors import MIError
from callapi.interfaces import IDialogOwner, IDialogRegistry, IMIClient, ISubscription
from callapi.logging import logger
from callapi.opensips.dialog import DialogRecord, DialogState
from callapi.opensips.names import MINames
from callapi.opensips.watch import Watch

#: Dialogs per C{dlg_list} page.  One dialog of trace 3.4/i_dlg_list is
#: about 1.2 KB of JSON (two small SDPs); real phones' SDPs make it 2-3 KB,
#: so 20 keep a page well under a 64 KiB datagram.  A page that fails
#: (oversized: plain-text error or no reply) is asked again at half size.
PAGE_SIZE = 20

_STATES = {s.value: s for s in DialogState}


@implementer(IDialogRegistry)
class DialogRegistry:
    """
    See the module docstring and L{IDialogRegistry}.

    @ivar stats: counters C{events}, C{malformed}, C{over_cap}, C{sweeps},
        C{checks}, C{dropped} (lingering records dropped).
    @ivar loaded: C{True} once a full sweep completed.
    """

    _log = logger()

    def __init__(
        self,
        clock: IReactorTime,
        mi: IMIClient,
        names: MINames,
        *,
        linger: float = 60.0,
        cap: int = 200_000,
        sweep_interval: float = 300.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        """
        @param linger: seconds an ended dialog stays listed.
        @param cap: most records held.
        @param sweep_interval: seconds between full sweeps (0: only at
            (re)connect, L{sweep}).
        @param page_size: dialogs per C{dlg_list} page.
        """
        self._clock = clock
        self._mi = mi
        self._names = names
        self.linger = linger
        self.cap = cap
        self.sweep_interval = sweep_interval
        self.page_size = page_size
        self._records: dict[str, DialogRecord] = {}
        self._ended: deque[tuple[float, str]] = deque()
        self._owners: dict[str, IDialogOwner] = {}
        self._observers: list[Callable[[Any], None]] = []
        self._sweeping: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        #: Call-IDs changed while a sweep runs (never marked ended by it)
        self._touched: set[str] | None = None
        self._timer: IDelayedCall | None = None
        self.loaded = False
        self.stats = {"events": 0, "malformed": 0, "over_cap": 0, "sweeps": 0, "checks": 0, "dropped": 0}

    # service

    def start(self) -> None:
        """
        Load now and sweep every C{sweep_interval} seconds.
        """
        self.sweep()

    def stop(self) -> None:
        """
        Cancel the sweep timer.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # events (hub observer)

    def on_event(self, event: str, params: dict[str, Any]) -> None:
        """
        L{callapi.opensips.events.EventHub.observe} hook: O(1) per event.
        Ill-typed events are counted (C{malformed}) and ignored; the
        commands' parsers log them.
        """
        if event == "E_DLG_STATE_CHANGED":
            callid, new = params.get("callid"), params.get("new_state")
            if not isinstance(callid, str) or type(new) is not int or new not in _STATES:
                self.stats["malformed"] += 1
                return
            self.stats["events"] += 1
            dialog_id = params.get("id")
            self._update(callid, _STATES[new], dialog_id if isinstance(dialog_id, str) else None)
        elif event == "E_CALL_HOLD":
            callid, leg, action, state = (params.get(k) for k in ("callid", "leg", "action", "state"))
            record = self._records.get(callid) if isinstance(callid, str) else None
            if record is None or state != "ok" or leg not in ("caller", "callee"):
                return
            self.stats["events"] += 1
            if action == "hold":
                record.held.add(leg)
            elif action == "unhold":
                record.held.discard(leg)
            record.updated_at = self._clock.seconds()
            self._changed(record)
        elif event == "E_CALL_TRANSFER":
            new_callid = params.get("transfer_callid")
            if params.get("state") == "start" and isinstance(new_callid, str) and new_callid:
                self.stats["events"] += 1
                if new_callid not in self._records:
                    # the new INVITE reached the proxy: a dialog exists
                    self._update(new_callid, DialogState.UNCONFIRMED, None)

    # records

    def _update(
        self, callid: str, state: DialogState, dialog_id: str | None, ended_ok: bool = False
    ) -> DialogRecord | None:
        now = self._clock.seconds()
        self._expire(now)
        if self._touched is not None:
            self._touched.add(callid)
        record = self._records.get(callid)
        if record is None:
            if len(self._records) >= self.cap and not self._drop_oldest_ended():
                self.stats["over_cap"] += 1
                if self.stats["over_cap"] & (self.stats["over_cap"] - 1) == 0:
                    self._log.warn("dialog registry full ({cap} records): not tracking more", cap=self.cap)
                return None
            record = DialogRecord(callid, dialog_id, state, created_at=now, updated_at=now)
            owner = self._owners.get(callid)
            if owner is not None:
                record.owner_cmd_id = owner.cmd_id
            self._records[callid] = record
        else:
            if record.state is DialogState.DELETED and state is not DialogState.DELETED and not ended_ok:
                return record  # reordered event of an ended dialog
            if record.state is DialogState.DELETED and state is not DialogState.DELETED:
                record.ended_at = None
            record.state = state
            record.updated_at = now
            if dialog_id is not None:
                record.dialog_id = dialog_id
        if state is DialogState.DELETED and record.ended_at is None:
            record.ended_at = now
            self._ended.append((now, callid))
        self._changed(record)
        return record

    def _expire(self, now: float) -> None:
        ended = self._ended
        while ended and ended[0][0] + self.linger <= now:
            _, callid = ended.popleft()
            record = self._records.get(callid)
            if record is not None and record.ended_at is not None and record.ended_at + self.linger <= now:
                del self._records[callid]
                self.stats["dropped"] += 1

    def _drop_oldest_ended(self) -> bool:
        while self._ended:
            _, callid = self._ended.popleft()
            record = self._records.get(callid)
            if record is not None and record.ended_at is not None:
                del self._records[callid]
                self.stats["dropped"] += 1
                return True
        return False

    def _changed(self, record: DialogRecord) -> None:
        for observer in self._observers:
            observer(record)

    def _from_listing(self, entry: Any, sent_at: float) -> DialogRecord | None:
        """
        Update from one C{dlg_list} dialog object (C{ID}, C{state},
        C{callid}, C{from_uri}, C{to_uri}) unless an event changed the
        record after the request was sent.
        """
        if not isinstance(entry, dict):
            return None
        callid, state = entry.get("callid"), entry.get("state")
        if not isinstance(callid, str) or type(state) is not int or state not in _STATES:
            return None
        record = self._records.get(callid)
        dialog_id = entry.get("ID") if isinstance(entry.get("ID"), str) else None
        if record is None or record.updated_at <= sent_at:
            record = self._update(callid, _STATES[state], dialog_id, ended_ok=True)
        if record is not None:
            if isinstance(entry.get("from_uri"), str):
                record.from_uri = entry["from_uri"]
            if isinstance(entry.get("to_uri"), str):
                record.to_uri = entry["to_uri"]
        return record

    # IDialogRegistry

    def get(self, callid: str) -> DialogRecord | None:
        return self._records.get(callid)

    def check(self, callid: str) -> Deferred[Any]:
        self.stats["checks"] += 1
        sent_at = self._clock.seconds()

        def got(reply: Any) -> DialogRecord | None:
            entry = reply.get("Dialog") if isinstance(reply, dict) else None
            record = self._from_listing(entry, sent_at)
            if record is None or record.state is DialogState.DELETED:
                return None
            return record

        def failed(reason: Any) -> DialogRecord | None:
            reason.trap(MIError)
            if reason.value.code != 404:
                return reason  # type: ignore[no-any-return]
            record = self._records.get(callid)
            if (
                record is not None
                and record.state is not DialogState.DELETED
                and record.updated_at <= sent_at
            ):
                self._update(callid, DialogState.DELETED, None)
            return None

        d = self._mi.call(self._names.list_dialogs, {"callid": callid})
        return d.addCallbacks(got, failed)

    def details(self, callid: str) -> Deferred[Any]:
        """
        The record with C{from_uri}/C{to_uri} learnt (one C{dlg_list
        callid=} the first time they are wanted; never on the command path).

        @return: C{Deferred} firing with the record or C{None}.
        """
        record = self._records.get(callid)
        if record is not None and record.from_uri is not None:
            return succeed(record)
        return self.check(callid)

    def resolve(self, callid: str) -> Deferred[Any]:
        record = self._records.get(callid)
        if record is not None and record.state is not DialogState.DELETED and record.dialog_id:
            return succeed(record.dialog_id)
        return self.check(callid).addCallback(lambda r: r.dialog_id if r is not None else None)

    def claim(self, callid: str, owner: IDialogOwner) -> None:
        self._owners[callid] = owner
        record = self._records.get(callid)
        if record is not None:
            record.owner_cmd_id = owner.cmd_id
            self._changed(record)

    def release(self, callid: str, owner: IDialogOwner) -> None:
        if self._owners.get(callid) is not owner:
            return
        del self._owners[callid]
        record = self._records.get(callid)
        if record is not None:
            record.owner_cmd_id = None
            self._changed(record)

    def owner(self, callid: str) -> IDialogOwner | None:
        return self._owners.get(callid)

    def dialogs(self) -> Iterator[DialogRecord]:
        self._expire(self._clock.seconds())
        return iter(list(self._records.values()))

    def watch(self, observer: Callable[[Any], None]) -> ISubscription:
        return Watch(self._observers, observer)

    def __len__(self) -> int:
        return len(self._records)

    # sweeps

    def sweep(self) -> Deferred[None]:
        """
        A full paged C{dlg_list} now (shared with one under way): records
        are added/updated; live records not listed and not changed since
        the sweep began are marked ended (only when the total C{count} did
        not change during the sweep, since pages shift when dialogs come
        and go).  Reschedules the next sweep.

        @return: fires when done; never fails (failures are logged).
        """
        if self._sweeping is not None:
            d: Deferred[None] = Deferred()
            self._waiters.append(d)
            return d
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

        def done(result: Any) -> None:
            self._sweeping = None
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)
            if self.sweep_interval > 0:
                self._timer = self._clock.callLater(self.sweep_interval, self.sweep)

        d = Deferred.fromCoroutine(self._sweep())
        self._sweeping = d
        d.addBoth(done)
        return d

    async def _sweep(self) -> None:
        started = self._clock.seconds()
        touched: set[str] = set()
        self._touched = touched
        seen: set[str] = set()
        counts: set[int] = set()
        index, page = 0, self.page_size
        try:
            while True:
                try:
                    reply = await self._mi.call(self._names.list_dialogs, {"index": index, "counter": page})
                except Exception as e:
                    if page > 1:
                        page = max(1, page // 2)
                        self._log.info(
                            "dlg_list page failed ({error}); asking {page}", error=str(e), page=page
                        )
                        continue
                    raise
                if not isinstance(reply, dict) or not isinstance(reply.get("Dialogs", []), list):
                    raise ValueError(f"unexpected dlg_list reply {str(reply)[:200]!r}")
                entries = reply.get("Dialogs", [])
                count = reply.get("count")
                if isinstance(count, int):
                    counts.add(count)
                for entry in entries:
                    record = self._from_listing(entry, started)
                    if record is not None:
                        seen.add(record.callid)
                index += len(entries)
                if not entries or not isinstance(count, int) or index >= count:
                    break
        except Exception as e:
            self._log.warn("dialog registry sweep failed: {error}", error=str(e))
            return
        finally:
            self._touched = None
        self.stats["sweeps"] += 1
        self.loaded = True
        ended = 0
        if len(counts) <= 1:
            for record in list(self._records.values()):
                if (
                    record.callid not in seen
                    and record.callid not in touched
                    and record.state is not DialogState.DELETED
                    and record.updated_at <= started
                ):
                    self._update(record.callid, DialogState.DELETED, None)
                    ended += 1
        self._log.info(
            "dialog registry: {count} dialogs listed, {ended} found ended", count=len(seen), ended=ended
        )
