"""
The closed-loop load of one load process, and what it measured.

Transport-agnostic and reactor-free: a L{LoadConnection} is given a
C{send(bytes)} that writes one WebSocket text message and is fed every
message received (L{LoadConnection.received}); the caller (L{bench.worker})
provides the WebSocket and the timers (L{Load.sweep} every 0.5 s).  Times are
C{time.perf_counter()} seconds; the results are milliseconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bench.scenarios import (
    BLIND_DESTINATION,
    CALLSTART_CALLEE,
    CALLSTART_CALLER,
    FIRST_METHOD,
    SUCCESS_EVENT,
    expected_ok,
)


class Slot:
    """
    One closed loop of commands on one connection (one in-flight command at
    a time).  hold: owns one Call-ID and alternates hold / unhold.
    callstart: CallStart, then CallEnd of the call it made (C{hangup}).
    blind: owns one Call-ID, replaced after each transfer by the new call's.
    """

    __slots__ = ("callid", "conn", "hangup", "next_method")

    def __init__(self, conn: LoadConnection, scenario: str, callid: str | None) -> None:
        self.conn = conn
        self.callid = callid
        self.next_method = FIRST_METHOD[scenario]
        #: callstart: Call-ID of the call to end before the next CallStart
        self.hangup: str | None = None


class InFlight:
    """
    One command sent and not yet ended (or counted as hung).
    """

    __slots__ = (
        "cleanup",
        "error",
        "events",
        "hung",
        "method",
        "new_callid",
        "sent",
        "slot",
        "started",
        "success",
    )

    def __init__(self, slot: Slot, method: str, sent: float, cleanup: bool = False) -> None:
        self.slot = slot
        self.method = method
        self.sent = sent
        self.started = 0.0
        #: when the success event (L{SUCCESS_EVENT}) arrived, 0.0 if not
        self.success = 0.0
        #: C{callid} in the success event's data (the new call)
        self.new_callid: str | None = None
        self.events: list[str] = []
        self.error = False
        self.hung = False
        #: not measured: callstart's CallEnd of the call it made
        self.cleanup = cleanup


_CALLSTART_PARAMS = json.dumps(
    {"caller": CALLSTART_CALLER, "callee": CALLSTART_CALLEE}, separators=(",", ":")
)


class LoadConnection:
    """
    The JSON-RPC side of one WebSocket connection: sends the commands of its
    slots, routes responses by id and notifications by cmd_id, and reports
    each finished command to the L{Load}.  Transport-agnostic: C{send}
    writes one text message; L{received} takes one.
    """

    def __init__(self, load: Load, send: Callable[[bytes], None]) -> None:
        self.load = load
        self.send = send
        self.next_id = 0
        self.by_id: dict[int, InFlight] = {}
        self.by_cmd: dict[str, InFlight] = {}
        self.slots: list[Slot] = []

    def issue(self, slot: Slot) -> None:
        """
        Send C{slot}'s next command (C{slot.next_method}) and track it as in flight.
        """
        method = slot.next_method
        self.next_id += 1
        request_id = self.next_id
        cleanup = False
        if method == "Echo":
            params = '{"n":%d}' % request_id
        elif method in ("CallHold", "CallUnhold"):
            params = '{"callid":%s}' % json.dumps(slot.callid)
            slot.next_method = "CallUnhold" if method == "CallHold" else "CallHold"
        elif method == "CallStart":
            params = _CALLSTART_PARAMS
        elif method == "CallEnd":
            params = '{"callid":%s}' % json.dumps(slot.hangup)
            cleanup = True
        elif method == "CallBlindTransfer":
            params = '{"callid":%s,"leg":"callee","destination":%s}' % (
                json.dumps(slot.callid),
                json.dumps(BLIND_DESTINATION),
            )
        else:
            raise AssertionError(method)
        message = '{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}' % (request_id, method, params)
        flight = InFlight(slot, method, time.perf_counter(), cleanup)
        self.by_id[request_id] = flight
        self.load.outstanding[id(flight)] = flight
        self.send(message.encode())

    def received(self, payload: bytes) -> None:
        """
        Take one text message from the daemon: a response (by C{id}) or a
        notification (by C{cmd_id}).  Anything else counts as unexpected.
        """
        now = time.perf_counter()
        try:
            message = json.loads(payload)
        except ValueError:
            self.load.unexpected += 1
            return
        if not isinstance(message, dict):
            self.load.unexpected += 1
            return
        if "id" in message:
            flight = self.by_id.pop(message["id"], None)
            if flight is None:
                self.load.unexpected += 1
                return
            flight.started = now
            if "error" in message:
                flight.error = True
                self.load.count_error(flight, message["error"], rpc=True)
                self.load.finished(flight, now, ok=False)
                return
            self.by_cmd[message["result"]["cmd_id"]] = flight
            return
        params: dict[str, Any] = message.get("params") or {}
        cmd_id: str = params.get("cmd_id", "")
        flight = self.by_cmd.get(cmd_id)
        if flight is None:
            self.load.unexpected += 1
            return
        event = str(params.get("event"))
        flight.events.append(event)
        if event == "Error":
            flight.error = True
            self.load.count_error(flight, params.get("data"), rpc=False)
        elif event == "Ended":
            del self.by_cmd[cmd_id]
            self.load.finished(flight, now, ok=expected_ok(flight.method, flight.events))
        elif event == SUCCESS_EVENT.get(flight.method) and not flight.success:
            flight.success = now
            data = params.get("data")
            if isinstance(data, dict) and isinstance(data.get("callid"), str):
                flight.new_callid = data["callid"]


class Load:
    """
    The closed-loop load of one worker process, and what it measured.

    @ivar done: a Deferred the worker sets; fired once nothing is
        outstanding and no more commands will be sent.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        """
        @param cfg: the worker configuration the orchestrator wrote
            (L{bench.runner}); read here: C{scenario}, C{commands},
            C{hang_timeout} (seconds).
        """
        self.cfg = cfg
        self.connections: list[LoadConnection] = []
        self.outstanding: dict[int, InFlight] = {}
        #: (counted_at, to_started, to_success or -1, to_ended, counts): counted_at is
        #: the success event's time for callstart/blind (Ended's if it failed), else
        #: Ended's; counts: whether it counts towards commands/s
        self.samples: list[tuple[float, float, float, float, bool]] = []
        self.completed = 0
        self.rpc_errors = 0
        self.error_events = 0
        self.unexpected = 0
        self.bad_sequence = 0
        self.hung = 0
        self.late = 0
        self.error_kinds: dict[str, int] = {}
        # callstart: the CallEnd after each CallStart (not measured)
        self.cleanup_completed = 0
        self.cleanup_errors = 0
        self.cleanup_hung = 0
        self.cleanup_ended: list[float] = []
        # blind: calls kept in reserve for a slot whose transfer made no new call
        self.spare_callids: list[str] = []
        self.spares_used = 0
        self.slots_stopped = 0
        self.counts_on_success = cfg.get("scenario") in ("callstart", "blind")
        self.issuing = False
        self.issued = 0
        self.budget: int | None = cfg.get("commands")
        self.t_go = 0.0
        self.t_last_end = 0.0
        self.done: Any = None

    def count_error(self, flight: InFlight, what: Any, rpc: bool) -> None:
        """
        Count a JSON-RPC error response (C{rpc}) or an C{Error} notification.
        """
        if flight.cleanup:
            self.cleanup_errors += 1
        elif rpc:
            self.rpc_errors += 1
        else:
            self.error_events += 1
        self.note_error(what)

    def finished(self, flight: InFlight, now: float, ok: bool) -> None:
        """
        Record C{flight}, which got its response error or C{Ended} at C{now},
        and send its slot's next command.

        @param ok: whether its notifications were the full successful sequence.
        """
        self.outstanding.pop(id(flight), None)
        if flight.hung:
            self.late += 1
            return
        if flight.cleanup:
            self.cleanup_completed += 1
            self.cleanup_ended.append(now - flight.sent)
        else:
            self.completed += 1
            self.t_last_end = now
            if not ok and not flight.error:
                self.bad_sequence += 1
            started = flight.started or now
            if self.counts_on_success:
                counts = bool(flight.success)
                at = flight.success or now
            else:
                counts, at = True, now
            self.samples.append(
                (
                    at,
                    started - flight.sent,
                    flight.success - flight.sent if flight.success else -1.0,
                    now - flight.sent,
                    counts,
                )
            )
        self._advance(flight)
        self._next(flight.slot)

    def _advance(self, flight: InFlight) -> None:
        """
        Choose the slot's next command after C{flight} (ended or hung).
        """
        slot = flight.slot
        if flight.method == "CallStart":
            if flight.new_callid:
                slot.hangup = flight.new_callid
                slot.next_method = "CallEnd"
        elif flight.method == "CallEnd":
            slot.hangup = None
            slot.next_method = "CallStart"
        elif flight.method == "CallBlindTransfer":
            if flight.new_callid and flight.success and not flight.hung:
                slot.callid = flight.new_callid
            elif self.spare_callids:
                # no new call (error, hung): the old one cannot be transferred again
                slot.callid = self.spare_callids.pop()
                self.spares_used += 1
            else:
                slot.callid = None
                self.slots_stopped += 1

    def _next(self, slot: Slot) -> None:
        """
        Send C{slot}'s next command, unless the load is stopping or out of budget.
        """
        if not self.issuing:
            self._maybe_done()
            return
        if slot.next_method == "CallBlindTransfer" and slot.callid is None:
            self._maybe_done()  # no call left for this slot
            return
        if self.budget is not None and slot.next_method != "CallEnd":
            if self.issued >= self.budget:
                self.issuing = False
                self._maybe_done()
                return
            self.issued += 1
        slot.conn.issue(slot)

    def _maybe_done(self) -> None:
        if not self.done_waiting():
            return
        self.done.callback(None)

    def done_waiting(self) -> bool:
        """
        Whether L{done} may fire: nothing outstanding and no more commands to send.
        """
        if self.done is None or self.done.called or self.outstanding:
            return False
        if not self.issuing:
            return True
        # every blind slot ran out of calls
        return all(
            slot.next_method == "CallBlindTransfer" and slot.callid is None
            for conn in self.connections
            for slot in conn.slots
        )

    def sweep(self) -> None:
        """
        Mark commands without Ended after --hang-timeout as hung and let
        their slot go on.
        """
        limit = time.perf_counter() - self.cfg["hang_timeout"]
        for key, flight in list(self.outstanding.items()):
            if flight.sent < limit and not flight.hung:
                flight.hung = True
                if flight.cleanup:
                    self.cleanup_hung += 1
                else:
                    self.hung += 1
                del self.outstanding[key]
                self._advance(flight)
                self._next(flight.slot)
        self._maybe_done()

    def start(self) -> None:
        """
        Start every slot (the C{go} of the orchestrator).
        """
        self.t_go = time.perf_counter()
        self.issuing = True
        for conn in self.connections:
            for slot in conn.slots:
                self._next(slot)

    def stop_issuing(self) -> None:
        """
        Send no further command; L{done} fires once the outstanding ones end.
        """
        self.issuing = False
        self._maybe_done()

    def abandon(self) -> None:
        """
        Drain deadline passed: whatever is still outstanding is hung.
        """
        for flight in self.outstanding.values():
            if not flight.hung:
                flight.hung = True
                if flight.cleanup:
                    self.cleanup_hung += 1
                else:
                    self.hung += 1
        self.outstanding.clear()

    def result(self, window: tuple[float, float] | None) -> dict[str, Any]:
        """
        What this process measured, as the JSON the orchestrator merges.

        @param window: C{(start, end)} in C{perf_counter} seconds: only commands
            counted in it are in the rate and the latencies; C{None} for
            everything (C{--commands}, idle check).
        """
        if window is None:
            inside = self.samples
            elapsed = max(self.t_last_end - self.t_go, 1e-9)
        else:
            lo, hi = window
            inside = [s for s in self.samples if lo <= s[0] < hi]
            elapsed = hi - lo
        per_second: list[int] = []
        for sample in self.samples:
            if sample[4]:
                second = int(sample[0] - self.t_go)
                if second >= 0:
                    per_second.extend([0] * (second + 1 - len(per_second)))
                    per_second[second] += 1
        return {
            "per_second": per_second,
            "completed_total": self.completed,
            "completed_window": sum(1 for s in inside if s[4]),
            "counted_total": sum(1 for s in self.samples if s[4]),
            "elapsed": elapsed,
            "to_started_ms": [round(s[1] * 1000, 3) for s in inside],
            "to_success_ms": [round(s[2] * 1000, 3) for s in inside if s[2] >= 0],
            "to_ended_ms": [round(s[3] * 1000, 3) for s in inside],
            "rpc_errors": self.rpc_errors,
            "error_events": self.error_events,
            "bad_sequence": self.bad_sequence,
            "unexpected": self.unexpected,
            "hung": self.hung,
            "late": self.late,
            "error_kinds": self.error_kinds,
            "cleanup_completed": self.cleanup_completed,
            "cleanup_errors": self.cleanup_errors,
            "cleanup_hung": self.cleanup_hung,
            "cleanup_ended_ms": [round(x * 1000, 3) for x in self.cleanup_ended],
            "spares_used": self.spares_used,
            "slots_stopped": self.slots_stopped,
        }

    def note_error(self, what: Any) -> None:
        """
        Count an error by its text (at most 20 distinct texts are kept).
        """
        text = what if isinstance(what, str) else json.dumps(what)
        text = text[:200]
        if text in self.error_kinds or len(self.error_kinds) < 20:
            self.error_kinds[text] = self.error_kinds.get(text, 0) + 1
