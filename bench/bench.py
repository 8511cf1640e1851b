"""
Load benchmark of the callapi daemon against the OpenSIPS emulator.

Everything runs as separate processes on 127.0.0.1 only::

    bench.py (orchestrator, plain Python, no reactor)
      |- python -m callapi.emulator --mi udp:127.0.0.1:0 --delay-scale 0 ...
      |- python -m twisted callapi --listen tcp:PORT:interface=127.0.0.1 --mi udp:...
      `- bench.py --worker ... (x --client-procs): Twisted WebSocket clients

Scenarios (fresh emulator and daemon for each):

  echo  N clients, each a closed loop of Echo (next one after Ended),
        --depth commands in flight per client.
  hold  N clients; every in-flight slot owns one emulator call and alternates
        CallHold / CallUnhold on it, so two holds never touch the same call.
  callstart
        N clients, each a closed loop of CallStart alice -> bob; after each
        one that reached CalleeAnswered the slot hangs the new call up with
        CallEnd (not measured) before its next CallStart.
  blind N clients; every slot owns one emulator call and sends
        CallBlindTransfer leg=callee destination=cindy on it; the call the
        transfer creates (TransferSuccessful's callid) is the slot's next
        call, so no call is transferred twice (OpenSIPS: 491).
  idle  --idle-clients idle WebSocket connections; daemon RSS before/after.

Run from the repository root so the working tree is what gets imported::

    cd /work/main && /work/venv/bin/python bench/bench.py --scenario all

See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import platform
import random
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SCENARIOS = ("echo", "hold", "callstart", "blind", "idle")

#: CallStart of the callstart scenario, and the blind transfer's target
CALLSTART_CALLER = "sip:alice@127.0.0.1"
CALLSTART_CALLEE = "sip:bob@127.0.0.1"
BLIND_DESTINATION = "sip:cindy@127.0.0.1"

#: the first method of a slot, per scenario
FIRST_METHOD = {"echo": "Echo", "hold": "CallHold", "callstart": "CallStart",
                "blind": "CallBlindTransfer", "idle": "Echo"}

#: the notification that counts a command as successful (its rate and the
#: "Success" latency); commands without one count when they end
SUCCESS_EVENT = {"CallStart": "CalleeAnswered", "CallBlindTransfer": "TransferSuccessful"}

#: scenarios that use emulator calls (one per slot, plus spares for blind)
CALL_SCENARIOS = ("hold", "blind")


class BenchError(Exception):
    """
    The benchmark could not run (a process did not start, a deadline passed).
    """


# ---------------------------------------------------------------------------
# Helpers shared by orchestrator and workers
# ---------------------------------------------------------------------------

def raise_nofile_limit() -> int:
    """
    Raise this process' soft RLIMIT_NOFILE to its hard limit (the idle
    scenario holds 10,000+ sockets).  Also run in every child (preexec_fn).

    @return: the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


try:
    import ctypes

    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    _LIBC = None

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """
    preexec_fn of every child: raise the fd limit, and ask Linux to SIGTERM
    the child if the bench process dies (even by SIGKILL).
    """
    raise_nofile_limit()
    if _LIBC is not None:
        try:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except Exception:
            pass


def percentile(sorted_values: list[float], p: float) -> float | None:
    """
    Nearest-rank percentile of an already sorted list; C{None} when empty.
    """
    if not sorted_values:
        return None
    rank = max(1, int(-(-p * len(sorted_values) // 100)))  # ceil
    return sorted_values[min(rank, len(sorted_values)) - 1]


# ---------------------------------------------------------------------------
# Worker: the WebSocket load generator (one Twisted reactor per process)
# ---------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _expected_ok(method: str, events: list[str]) -> bool:
    """
    Whether C{events} is the full, successful notification sequence of
    C{method} (PROTOCOL.md section 1).
    """
    if method == "Echo":
        return events == ["Reply", "Ended"]
    if method in ("CallHold", "CallUnhold"):
        prefix = "CallHold" if method == "CallHold" else "CallUnhold"
        return (len(events) == 6 and events[0] == prefix + "ing" and events[-1] == "Ended"
                and sorted(events[1:5]) == sorted([prefix + "Start"] * 2 + [prefix + "Successful"] * 2))
    if method == "CallStart":
        return [e for e in events if e != "TransferPending"] == [
            "CallerAnswered", "Transferring", "TransferStart", "CalleeAnswered", "Ended"]
    if method == "CallBlindTransfer":
        return [e for e in events if e != "TransferPending"] == [
            "Transferring", "TransferStart", "TransferSuccessful", "Ended"]
    if method == "CallEnd":
        return events == ["Ended"]
    return events[-1:] == ["Ended"]


class Slot:
    """
    One closed loop of commands on one connection (one in-flight command at
    a time).  hold: owns one Call-ID and alternates hold / unhold.
    callstart: CallStart, then CallEnd of the call it made (C{hangup}).
    blind: owns one Call-ID, replaced after each transfer by the new call's.
    """

    __slots__ = ("conn", "callid", "next_method", "hangup")

    def __init__(self, conn: "LoadConnection", scenario: str, callid: str | None) -> None:
        self.conn = conn
        self.callid = callid
        self.next_method = FIRST_METHOD[scenario]
        #: callstart: Call-ID of the call to end before the next CallStart
        self.hangup: str | None = None


class InFlight:
    __slots__ = ("slot", "method", "sent", "started", "success", "new_callid", "events",
                 "error", "hung", "cleanup")

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


_CALLSTART_PARAMS = json.dumps({"caller": CALLSTART_CALLER, "callee": CALLSTART_CALLEE},
                               separators=(",", ":"))


class LoadConnection:
    """
    The JSON-RPC side of one WebSocket connection: sends the commands of its
    slots, routes responses by id and notifications by cmd_id, and reports
    each finished command to the L{Load}.  Transport-agnostic: C{send}
    writes one text message; L{received} takes one.
    """

    def __init__(self, load: "Load", send: Callable[[bytes], None]) -> None:
        self.load = load
        self.send = send
        self.next_id = 0
        self.by_id: dict[int, InFlight] = {}
        self.by_cmd: dict[str, InFlight] = {}
        self.slots: list[Slot] = []

    def issue(self, slot: Slot) -> None:
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
                json.dumps(slot.callid), json.dumps(BLIND_DESTINATION))
        else:
            raise AssertionError(method)
        message = '{"jsonrpc":"2.0","id":%d,"method":"%s","params":%s}' % (request_id, method, params)
        flight = InFlight(slot, method, time.perf_counter(), cleanup)
        self.by_id[request_id] = flight
        self.load.outstanding[id(flight)] = flight
        self.send(message.encode())

    def received(self, payload: bytes) -> None:
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
            self.load.finished(flight, now, ok=_expected_ok(flight.method, flight.events))
        elif event == SUCCESS_EVENT.get(flight.method) and not flight.success:
            flight.success = now
            data = params.get("data")
            if isinstance(data, dict) and isinstance(data.get("callid"), str):
                flight.new_callid = data["callid"]


class Load:
    """
    The closed-loop load of one worker process, and what it measured.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
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
        if flight.cleanup:
            self.cleanup_errors += 1
        elif rpc:
            self.rpc_errors += 1
        else:
            self.error_events += 1
        self.note_error(what)

    def finished(self, flight: InFlight, now: float, ok: bool) -> None:
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
            self.samples.append((at, started - flight.sent,
                                 flight.success - flight.sent if flight.success else -1.0,
                                 now - flight.sent, counts))
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
        if self.done is None or self.done.called or self.outstanding:
            return False
        if not self.issuing:
            return True
        # every blind slot ran out of calls
        return all(slot.next_method == "CallBlindTransfer" and slot.callid is None
                   for conn in self.connections for slot in conn.slots)

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
        self.t_go = time.perf_counter()
        self.issuing = True
        for conn in self.connections:
            for slot in conn.slots:
                self._next(slot)

    def stop_issuing(self) -> None:
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


def _worker_protocols() -> tuple[Any, Any]:
    """
    The two client implementations, built lazily (they import Twisted and
    Autobahn, which the orchestrator does not need).
    """
    from autobahn.twisted.websocket import WebSocketClientProtocol
    from twisted.internet.protocol import Protocol

    class RawWebSocketClient(Protocol):
        """
        A minimal RFC 6455 client: one handshake, masked text frames out,
        unmasked frames in (text, ping -> pong, close).  It needs about
        half the CPU of Autobahn's client per message, so one client
        process keeps the daemon saturated on a 2-core machine.
        """

        transport: Any

        def __init__(self, host: str, port: int, path: str, opened: Any) -> None:
            self._host, self._port, self._path = host, port, path
            self.opened = opened
            self._buf = b""
            self._open = False
            self._fragments: list[bytes] = []
            self.on_text: Callable[[bytes], None] = lambda payload: None
            self._rand = random.Random()

        def connectionMade(self) -> None:
            key = base64.b64encode(os.urandom(16))
            self._accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            self.transport.setTcpNoDelay(True)
            self.transport.write(
                b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
                % (self._path.encode(), self._host.encode(), self._port, key))

        def send_text(self, payload: bytes) -> None:
            self._send_frame(0x1, payload)

        def _send_frame(self, opcode: int, payload: bytes) -> None:
            n = len(payload)
            if n < 126:
                header = bytes((0x80 | opcode, 0x80 | n))
            elif n < 65536:
                header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
            else:
                header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
            mask = self._rand.getrandbits(32).to_bytes(4, "big")
            if n:
                masked = (int.from_bytes(payload, "big")
                          ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
            else:
                masked = b""
            self.transport.write(header + mask + masked)

        def dataReceived(self, data: bytes) -> None:
            buf = self._buf + data if self._buf else data
            if not self._open:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self._buf = buf
                    return
                head = buf[:end]
                if not head.startswith(b"HTTP/1.1 101") or self._accept not in head:
                    self.transport.abortConnection()
                    if not self.opened.called:
                        self.opened.errback(ConnectionError(
                            "handshake refused: " + head.split(b"\r\n", 1)[0].decode("latin-1")))
                    return
                self._open = True
                buf = buf[end + 4:]
                self.opened.callback(self)
            pos, size = 0, len(buf)
            while size - pos >= 2:
                b0, b1 = buf[pos], buf[pos + 1]
                n = b1 & 0x7F
                start = pos + 2
                if n == 126:
                    if size - pos < 4:
                        break
                    n = int.from_bytes(buf[pos + 2:pos + 4], "big")
                    start = pos + 4
                elif n == 127:
                    if size - pos < 10:
                        break
                    n = int.from_bytes(buf[pos + 2:pos + 10], "big")
                    start = pos + 10
                if b1 & 0x80:
                    start += 4  # servers must not mask; tolerate by skipping the key
                if size < start + n:
                    break
                payload = buf[start:start + n]
                pos = start + n
                opcode = b0 & 0x0F
                if opcode in (0x1, 0x2, 0x0):
                    if not b0 & 0x80:
                        self._fragments.append(payload)
                        continue
                    if self._fragments:
                        payload = b"".join(self._fragments) + payload
                        self._fragments = []
                    self.on_text(payload)
                elif opcode == 0x9:
                    self._send_frame(0xA, payload)
                elif opcode == 0x8:
                    self._send_frame(0x8, payload[:2])
                    self.transport.loseConnection()
                    break
            self._buf = buf[pos:]

        def connectionLost(self, reason: Any = None) -> None:
            if not self.opened.called:
                self.opened.errback(ConnectionError(str(reason.value)))

        def close(self) -> None:
            self.transport.abortConnection()

    class AutobahnClient(WebSocketClientProtocol):
        """
        The same interface on Autobahn (what callapi.testing.wsclient uses).
        """

        on_text: Callable[[bytes], None] = staticmethod(lambda payload: None)  # type: ignore
        # Autobahn calls setTcpNoDelay(self.tcpNoDelay) before it copies the
        # factory's options onto the protocol; without a class attribute the
        # AttributeError is swallowed and Nagle stays on (see docs/benchmarks.md).
        tcpNoDelay = True

        def onOpen(self) -> None:
            self.factory.opened.callback(self)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.on_text(payload)

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            if not self.factory.opened.called:
                self.factory.opened.errback(ConnectionError(f"closed: {code} {reason}"))

        def send_text(self, payload: bytes) -> None:
            self.sendMessage(payload, isBinary=False)

        def close(self) -> None:
            transport: Any = self.transport
            transport.abortConnection()

    return RawWebSocketClient, AutobahnClient


def worker_main(cfg: dict[str, Any]) -> None:
    """
    One load process.  Talks to the orchestrator with lines: it prints
    C{ready} once connected, waits for C{go} (load) or C{stop} (idle), and
    writes its results as JSON to C{cfg["result_path"]} before C{done}.
    """
    from twisted.internet import reactor as _reactor
    from twisted.internet import stdio, task
    from twisted.internet.defer import Deferred, DeferredSemaphore
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import LineReceiver

    reactor: Any = _reactor
    raise_nofile_limit()
    RawWebSocketClient, AutobahnClient = _worker_protocols()
    host, port, path = "127.0.0.1", cfg["port"], cfg["path"]
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=30)

    if cfg["client"] == "autobahn":
        from autobahn.twisted.websocket import WebSocketClientFactory

    def open_one() -> Deferred[Any]:
        opened: Deferred[Any] = Deferred()
        if cfg["client"] == "raw":
            factory = Factory.forProtocol(lambda: RawWebSocketClient(host, port, path, opened))
        else:
            factory = WebSocketClientFactory(f"ws://{host}:{port}{path}", reactor=reactor)
            factory.protocol = AutobahnClient
            factory.setProtocolOptions(utf8validateIncoming=False, tcpNoDelay=True,
                                       openHandshakeTimeout=30)
            factory.opened = opened  # type: ignore[attr-defined]
        d = endpoint.connect(factory)  # type: ignore[arg-type]
        d.addErrback(lambda f: opened.errback(f) if not opened.called else None)
        return opened

    async def open_with_retry() -> Any:
        delay = 0.05
        for attempt in range(8):
            try:
                return await open_one()
            except Exception:
                if attempt == 7:
                    raise
                await task.deferLater(reactor, delay, lambda: None)
                delay *= 2
        raise AssertionError("unreachable")

    control: dict[str, Deferred[str]] = {}
    early: set[str] = set()  # words that came before anyone waited for them

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            word = line.decode().strip()
            d = control.pop(word, None)
            if d is not None:
                d.callback(word)
            else:
                early.add(word)

        def connectionLost(self, reason: Any = None) -> None:
            # orchestrator went away: stop at once
            if reactor.running:
                reactor.stop()

    ctl = Control()
    stdio.StandardIO(ctl)

    def say(word: str) -> None:
        transport: Any = ctl.transport
        transport.write(word.encode() + b"\n")

    def wait_for(word: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        if word in early:
            early.discard(word)
            d.callback(word)
        else:
            control[word] = d
        return d

    load = Load(cfg)

    async def run() -> None:
        sem = DeferredSemaphore(cfg["connect_concurrency"])
        t0 = time.perf_counter()
        protocols = list(await _gather([sem.run(lambda: Deferred.fromCoroutine(open_with_retry()))
                                        for _ in range(cfg["connections"])]))
        connect_seconds = time.perf_counter() - t0
        result: dict[str, Any] = {"connected": len(protocols), "connect_seconds": connect_seconds}
        callids = list(cfg.get("callids") or [])
        for proto in protocols:
            conn = LoadConnection(load, proto.send_text)
            proto.on_text = conn.received
            load.connections.append(conn)
            if cfg["mode"] == "load":
                for _ in range(cfg["depth"]):
                    callid = callids.pop(0) if cfg["scenario"] in CALL_SCENARIOS else None
                    conn.slots.append(Slot(conn, cfg["scenario"], callid))
        load.spare_callids = callids  # blind: the calls beyond one per slot
        say("ready")
        if cfg["mode"] == "idle":
            await wait_for("check")
            # liveness check: one Echo on a sample of the idle connections
            sample = load.connections[::max(1, len(load.connections) // cfg["idle_check"])] \
                if cfg["idle_check"] else []
            for conn in sample:
                conn.slots.append(Slot(conn, "echo", None))
            load.budget = len(sample)
            load.done = Deferred()
            sweeper = task.LoopingCall(load.sweep)
            sweeper.start(0.5, now=False)
            load.start()
            if not sample:
                load.stop_issuing()
            await load.done
            sweeper.stop()
            result.update(load.result(None))
            result["idle_checked"] = len(sample)
        else:
            await wait_for("go")
            load.done = Deferred()
            sweeper = task.LoopingCall(load.sweep)
            sweeper.start(0.5, now=False)
            load.start()
            window = None
            if load.budget is None:
                await task.deferLater(reactor, cfg["warmup"] + cfg["duration"], lambda: None)
                t_go = load.t_go
                window = (t_go + cfg["warmup"], t_go + cfg["warmup"] + cfg["duration"])
                load.stop_issuing()
            # the sweeper ends every command within --hang-timeout (+0.5 s)
            await load.done
            sweeper.stop()
            result.update(load.result(window))
        with open(cfg["result_path"], "w") as f:
            json.dump(result, f)
        say("done")
        if cfg["mode"] == "idle":
            await wait_for("stop")
        for proto in protocols:
            proto.close()

    def finish(outcome: Any) -> None:
        if hasattr(outcome, "getTraceback"):
            sys.stderr.write(outcome.getTraceback())
            with open(cfg["result_path"] + ".err", "w") as f:
                f.write(outcome.getTraceback())
            try:
                say("failed")
            except Exception:
                pass
        reactor.callLater(0.1, reactor.stop)

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()).addBoth(finish))
    reactor.run()


async def _gather(ds: list[Any]) -> list[Any]:
    from twisted.internet.defer import gatherResults

    return await gatherResults(ds, consumeErrors=True)


# ---------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------

class LineReader:
    """
    Non-blocking line reader over a pipe, for select() with deadlines.
    """

    def __init__(self, fileobj: Any) -> None:
        self.fd = fileobj.fileno()
        os.set_blocking(self.fd, False)
        self._buf = b""
        self.eof = False

    def lines(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
        *complete, self._buf = self._buf.split(b"\n")
        out.extend(line.decode(errors="replace").strip() for line in complete)
        return out


class Processes:
    """
    Every child process of one scenario; L{kill_all} is idempotent and runs
    on any exit path.
    """

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, str] = {}

    def spawn(self, name: str, argv: list[str], *, log: bool = True,
              pipes: bool = False) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        stdout: Any = subprocess.DEVNULL
        stderr: Any = subprocess.DEVNULL
        if log:
            path = os.path.join(self.tmpdir, f"{name}.log")
            self.logs[name] = path
            logf = open(path, "ab")
            stderr = logf
            stdout = subprocess.PIPE if pipes else logf
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=stdout, stderr=stderr,
                                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, close_fds=True)
        if log:
            logf.close()
        self.procs[name] = proc
        return proc

    def kill_all(self) -> None:
        """
        SIGTERM the children newest first (clients, then the daemon while
        the emulator still answers its unsubscribe, then the emulator),
        SIGKILL whatever is still there after 5 s.
        """
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for proc in self.procs.values():
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.logs.get(name)
        if not path or not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """
    VmRSS / VmHWM of C{pid} in KiB (from /proc/PID/status).
    """
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """
    utime + stime of C{pid}, seconds.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def udp_drops(pid: int) -> dict[str, int]:
    """
    Datagrams the kernel dropped on each UDP socket of C{pid} (receive
    buffer full), keyed by local port, from /proc/net/udp.
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return {}
    out = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[9] in inodes:
                    out[str(int(fields[1].split(":")[1], 16))] = int(fields[12])
    except (OSError, IndexError, ValueError):
        pass
    return out


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def emulator_fast_purge_main(argv: list[str]) -> int:
    """
    C{bench.py --emulator-main ARGS}: the emulator's C{main(ARGS)} with an
    amortised C{OpenSIPSEmulator._purge_deleted} (--emulator-fast-purge).

    As is, C{_purge_deleted} scans every dialog on every MI datagram (and
    every C{add_call}), and ended dialogs stay for C{DELETED_LINGER_S} (10 s):
    at N commands/s that make D dialogs each, every MI request walks about
    10 * N * D dialogs and the emulator, not the daemon, sets the rate.
    Here ended dialogs are queued in the order they end (C{_set_state}) and
    purged from the front of that queue: the same dialogs go at the same
    time, in O(1) per request.  The emulator's source is not changed.
    """
    import collections
    import importlib

    # imported by name: the emulator's own typing is not the bench's concern
    emu_mod: Any = importlib.import_module("callapi.emulator.core")
    sip: Any = importlib.import_module("callapi.emulator.sip")

    cls: Any = emu_mod.OpenSIPSEmulator
    set_state = cls._set_state

    def _set_state(self: Any, dlg: Any, new: int) -> None:
        was = dlg.state
        set_state(self, dlg, new)
        if new == 5 and was != 5:
            self.__dict__.setdefault("_bench_ended", collections.deque()).append(dlg)

    def _purge_deleted(self: Any) -> None:
        ended = self.__dict__.get("_bench_ended")
        if not ended:
            return
        now = self.clock.seconds()
        while ended and now - ended[0].ended_at > sip.DELETED_LINGER_S:
            dlg = ended.popleft()
            if self.dialogs.get(dlg.callid) is dlg:
                del self.dialogs[dlg.callid]

    cls._set_state = _set_state
    cls._purge_deleted = _purge_deleted
    return emu_mod.main(argv)


def start_emulator(procs: Processes, calls: int, deadline: float,
                   fast_purge: bool = False) -> tuple[str, list[str]]:
    """
    Start the emulator on a free UDP port; wait for its banner and the
    C{demo call} line of each of C{calls} calls.

    @param fast_purge: run it through L{emulator_fast_purge_main}.
    @return: (MI address C{udp:127.0.0.1:PORT}, Call-IDs).
    """
    runner = ([os.path.abspath(__file__), "--emulator-main"] if fast_purge
              else ["-m", "callapi.emulator"])
    proc = procs.spawn("emulator", [sys.executable, *runner,
                                    "--mi", "udp:127.0.0.1:0", "--delay-scale", "0",
                                    "--demo-calls", str(calls)])
    mi_re = re.compile(r"MI on (udp:127\.0\.0\.1:\d+)")
    call_re = re.compile(r"demo call \S+ -> \S+: Call-ID (\S+)")
    mi, callids = None, []
    offset = 0
    # The emulator routes print() through its logger, so the lines arrive on
    # stderr ("[stdout#info] demo call ..."); both streams go to one file.
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"emulator exited with {proc.returncode}:\n{procs.tail('emulator')}")
        with open(procs.logs["emulator"], "rb") as f:
            f.seek(offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        offset += cut
        for line in data[:cut].decode(errors="replace").splitlines():
            if mi is None and (m := mi_re.search(line)):
                mi = m.group(1)
            if m := call_re.search(line):
                callids.append(m.group(1))
        if mi is not None and len(callids) >= calls:
            return mi, callids
        time.sleep(0.05)
    raise BenchError(f"emulator not ready (MI {mi}, {len(callids)}/{calls} calls):\n"
                     f"{procs.tail('emulator')}")


def start_daemon(procs: Processes, mi: str, args: argparse.Namespace,
                 deadline: float) -> tuple[subprocess.Popen[bytes], int]:
    """
    Start C{python -m twisted callapi} on a free port (retrying if another
    process took it first) and wait until a WebSocket handshake succeeds.
    """
    for attempt in range(3):
        port = free_port()
        logfile = os.path.join(procs.tmpdir, f"daemon-{attempt}.log")
        runner = [args.daemon_wrapper] if args.daemon_wrapper else ["-m", "twisted"]
        argv = [sys.executable, *runner, "--log-format", "text",
                "--log-file", logfile, "--log-level", args.daemon_log_level,
                "callapi", "--listen", f"tcp:{port}:interface=127.0.0.1", "--mi", mi,
                "--path", args.path, "--log-level", args.daemon_log_level]
        proc = procs.spawn("daemon", argv)
        procs.logs["daemon-twist"] = logfile
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if websocket_ready(port, args.path):
                return proc, port
            time.sleep(0.1)
        else:
            raise BenchError(f"daemon did not accept WebSocket connections:\n{procs.tail('daemon')}")
        text = procs.tail("daemon") + procs.tail("daemon-twist")
        if "Address already in use" not in text:
            raise BenchError(f"daemon exited with {proc.returncode}:\n{text}")
    raise BenchError("daemon: no free port after 3 attempts")


#: the events the daemon subscribes to at start (callapi.opensips.events)
DAEMON_EVENTS = ("E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED")


def wait_subscribed(procs: Processes, args: argparse.Namespace, deadline: float) -> None:
    """
    Wait until the daemon logged its event subscriptions ("subscribed to
    E_... on udp:..." at info): a command started before that waits for
    events that never come (CallStart: answer_confirm_wait, 2 s; hold and
    transfers: their timeouts).  Only a warning if the lines do not come
    (log level above info, or a changed message).
    """
    if args.daemon_log_level not in ("debug", "info"):
        time.sleep(0.5)
        return
    missing = set(DAEMON_EVENTS)
    path = procs.logs.get("daemon-twist")
    while time.monotonic() < deadline:
        try:
            with open(path or "", "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        missing = {e for e in missing if f"subscribed to {e} on" not in text}
        if not missing:
            return
        time.sleep(0.05)
    log(f"warning: the daemon did not log its subscription to {', '.join(sorted(missing))}")


def websocket_ready(port: int, path: str) -> bool:
    """
    One blocking WebSocket handshake (then close) against the daemon.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            key = base64.b64encode(os.urandom(16))
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), port, key))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                head += chunk
            ok = head.startswith(b"HTTP/1.1 101")
            if ok:
                s.sendall(bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
            return ok
    except OSError:
        return False


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Workers:
    """
    The load processes of one scenario and their line protocol.
    """

    def __init__(self, procs: Processes, configs: list[dict[str, Any]]) -> None:
        self.procs = procs
        self.configs = configs
        self.children: list[subprocess.Popen[bytes]] = []
        self.readers: list[LineReader] = []
        for i, cfg in enumerate(configs):
            path = os.path.join(procs.tmpdir, f"worker{i}.cfg.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            proc = procs.spawn(f"worker{i}", [sys.executable, os.path.abspath(__file__),
                                              "--worker", path], pipes=True)
            self.children.append(proc)
            self.readers.append(LineReader(proc.stdout))

    def send(self, word: str) -> None:
        for proc in self.children:
            assert proc.stdin is not None
            proc.stdin.write(word.encode() + b"\n")
            proc.stdin.flush()

    def expect(self, word: str, deadline: float) -> None:
        waiting = set(range(len(self.children)))
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"workers {sorted(waiting)} did not say {word!r} in time:\n"
                                 + "".join(self.procs.tail(f"worker{i}") for i in waiting))
            select.select([self.readers[i].fd for i in waiting], [], [], min(left, 0.5))
            for i in list(waiting):
                for line in self.readers[i].lines():
                    if line == word:
                        waiting.discard(i)
                    elif line == "failed":
                        raise BenchError(f"worker{i} failed:\n{self.procs.tail(f'worker{i}', 40)}")
                if i in waiting and (self.readers[i].eof or self.children[i].poll() is not None):
                    raise BenchError(f"worker{i} exited:\n{self.procs.tail(f'worker{i}', 40)}")

    def results(self) -> list[dict[str, Any]]:
        out = []
        for cfg in self.configs:
            with open(cfg["result_path"]) as f:
                out.append(json.load(f))
        return out

    def pids(self) -> list[int]:
        return [p.pid for p in self.children]


def run_scenario(name: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    tmpdir = tempfile.mkdtemp(prefix=f"callapi-bench-{name}-")
    procs = Processes(tmpdir)
    try:
        return _run_scenario(name, args, deadline, procs)
    finally:
        procs.kill_all()
        if args.keep_logs:
            log(f"{name}: logs kept in {tmpdir}")
        else:
            for entry in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, entry))
            os.rmdir(tmpdir)


def _run_scenario(name: str, args: argparse.Namespace, deadline: float,
                  procs: Processes) -> dict[str, Any]:
    setup_deadline = min(deadline, time.monotonic() + 30)
    nprocs = max(1, args.client_procs)
    if name == "idle":
        nprocs = max(1, min(nprocs, args.idle_clients))
        conns = split(args.idle_clients, nprocs)
        calls = 0
    else:
        nprocs = max(1, min(nprocs, args.clients))
        conns = split(args.clients, nprocs)
        calls = args.clients * args.depth if name in CALL_SCENARIOS else 0
    spares = split(args.blind_spare_calls, nprocs) if name == "blind" else [0] * nprocs
    mi, callids = start_emulator(procs, calls + sum(spares), setup_deadline,
                                 fast_purge=args.emulator_fast_purge)
    daemon, port = start_daemon(procs, mi, args, setup_deadline)
    emulator = procs.procs["emulator"]
    time.sleep(0.5)  # calls confirmed
    wait_subscribed(procs, args, min(setup_deadline, time.monotonic() + 10))
    rss_before = proc_status(daemon.pid)
    log(f"{name}: emulator pid {emulator.pid} ({mi}, {len(callids)} calls), daemon pid "
        f"{daemon.pid} (ws://127.0.0.1:{port}{args.path}), RSS {rss_before.get('VmRSS', 0) / 1024:.1f} MiB; "
        f"{nprocs} client process(es)")

    configs = []
    commands = split(args.commands, nprocs) if args.commands else [None] * nprocs
    call_offset = 0
    for i in range(nprocs):
        n_calls = (conns[i] * args.depth if name in CALL_SCENARIOS else 0) + spares[i]
        configs.append({
            "scenario": name, "mode": "idle" if name == "idle" else "load",
            "port": port, "path": args.path, "client": args.client,
            "connections": conns[i], "depth": args.depth,
            "callids": callids[call_offset:call_offset + n_calls],
            "commands": commands[i], "duration": args.duration, "warmup": args.warmup,
            "hang_timeout": args.hang_timeout,
            "connect_concurrency": args.connect_concurrency,
            "idle_check": max(0, args.idle_check // nprocs) if name == "idle" else 0,
            "result_path": os.path.join(procs.tmpdir, f"worker{i}.json"),
        })
        call_offset += n_calls
    workers = Workers(procs, configs)
    connect_deadline = min(deadline, time.monotonic() + args.connect_timeout)
    t_connect = time.monotonic()
    workers.expect("ready", connect_deadline)
    connect_seconds = time.monotonic() - t_connect
    watched = {"daemon": daemon.pid, "emulator": emulator.pid,
               **{f"worker{i}": pid for i, pid in enumerate(workers.pids())}}

    if name == "idle":
        time.sleep(1.0)
        rss_after = proc_status(daemon.pid)
        workers.send("check")
        workers.expect("done", min(deadline, time.monotonic() + args.hang_timeout + 10))
        parts = workers.results()
        workers.send("stop")
        before, after = rss_before.get("VmRSS", 0), rss_after.get("VmRSS", 0)
        connected = sum(p["connected"] for p in parts)
        checked = sum(p["idle_checked"] for p in parts)
        return {
            "scenario": "idle", "connections": connected,
            "connect_seconds": round(connect_seconds, 2),
            "connections_per_s": round(connected / connect_seconds, 1) if connect_seconds else None,
            "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
            "rss_peak_mib": round(rss_after.get("VmHWM", 0) / 1024, 1),
            "kib_per_connection": round((after - before) / connected, 2) if connected else None,
            "liveness_echo": f"{sum(p['completed_total'] for p in parts)}/{checked}",
            "errors": sum(p["rpc_errors"] + p["error_events"] for p in parts),
            "hung": sum(p["hung"] for p in parts),
            "daemon_rss_mib": round(after / 1024, 1),
        }

    cpu0 = {k: cpu_seconds(pid) for k, pid in watched.items()}
    t0 = time.monotonic()
    workers.send("go")
    cpu_window: tuple[float, float] | None = None
    if not args.commands:
        time.sleep(args.warmup)
        cpu0 = {k: cpu_seconds(pid) for k, pid in watched.items()}
        t0 = time.monotonic()
        time.sleep(args.duration)
        cpu1 = {k: cpu_seconds(pid) for k, pid in watched.items()}
        cpu_window = (t0, time.monotonic())
        rss_run = proc_status(daemon.pid)
    workers.expect("done", min(deadline, time.monotonic() + args.hang_timeout + 10
                               + (0 if not args.commands else args.max_runtime)))
    if cpu_window is None:
        cpu1 = {k: cpu_seconds(pid) for k, pid in watched.items()}
        cpu_window = (t0, time.monotonic())
        rss_run = proc_status(daemon.pid)
    drops = {"daemon": sum(udp_drops(daemon.pid).values()),
             "emulator": sum(udp_drops(emulator.pid).values())}
    parts = workers.results()
    workers.send("stop")
    wall = cpu_window[1] - cpu_window[0]
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in watched}
    client_cpu = round(sum(v for k, v in cpu.items() if k.startswith("worker")), 1)

    started = sorted(x for p in parts for x in p["to_started_ms"])
    success = sorted(x for p in parts for x in p["to_success_ms"])
    ended = sorted(x for p in parts for x in p["to_ended_ms"])
    cleanup = sorted(x for p in parts for x in p["cleanup_ended_ms"])
    if args.commands:
        completed = sum(p["counted_total"] for p in parts)
        elapsed = max(p["elapsed"] for p in parts)
    else:
        completed = sum(p["completed_window"] for p in parts)
        elapsed = args.duration
    daemon_log = procs.logs.get("daemon-twist")
    log_lines = 0
    if daemon_log and os.path.exists(daemon_log):
        with open(daemon_log, "rb") as f:
            log_lines = sum(1 for _ in f)
    return {
        "scenario": name, "clients": args.clients, "depth": args.depth,
        "client": args.client, "client_procs": nprocs,
        "commands": completed, "seconds": round(elapsed, 2),
        "commands_per_s": round(completed / elapsed, 1) if elapsed else None,
        "counted_on": {"callstart": "CalleeAnswered", "blind": "TransferSuccessful"}.get(name, "Ended"),
        "started_p50_ms": _r(percentile(started, 50)), "started_p99_ms": _r(percentile(started, 99)),
        "success_p50_ms": _r(percentile(success, 50)), "success_p99_ms": _r(percentile(success, 99)),
        "ended_p50_ms": _r(percentile(ended, 50)), "ended_p99_ms": _r(percentile(ended, 99)),
        "ended_max_ms": _r(ended[-1] if ended else None),
        "errors": sum(p["rpc_errors"] + p["error_events"] for p in parts),
        "rpc_errors": sum(p["rpc_errors"] for p in parts),
        "error_events": sum(p["error_events"] for p in parts),
        "bad_sequence": sum(p["bad_sequence"] for p in parts),
        "unexpected_messages": sum(p["unexpected"] for p in parts),
        "hung": sum(p["hung"] for p in parts),
        "late": sum(p["late"] for p in parts),
        "commands_total": sum(p["completed_total"] for p in parts),
        "error_kinds": _merge_counts(p["error_kinds"] for p in parts),
        "cleanup": {"commands": sum(p["cleanup_completed"] for p in parts),
                    "errors": sum(p["cleanup_errors"] for p in parts),
                    "hung": sum(p["cleanup_hung"] for p in parts),
                    "ended_p50_ms": _r(percentile(cleanup, 50)),
                    "ended_p99_ms": _r(percentile(cleanup, 99))},
        "per_second": [sum(column) for column in
                       zip(*(p["per_second"] + [0] * (len(max((q["per_second"] for q in parts), key=len))
                                                      - len(p["per_second"])) for p in parts))],
        "blind_spares_used": sum(p["spares_used"] for p in parts),
        "blind_slots_stopped": sum(p["slots_stopped"] for p in parts),
        "daemon_rss_mib": round(rss_run.get("VmRSS", 0) / 1024, 1),
        "cpu_percent": {"daemon": cpu["daemon"], "emulator": cpu["emulator"], "clients": client_cpu},
        "daemon_log_lines": log_lines,
        "udp_drops": drops,
    }


def _merge_counts(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def machine_info() -> dict[str, Any]:
    commit = ""
    try:
        # read-only: --no-optional-locks keeps git status from rewriting the index
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        changed = [line[3:] for line in subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO, capture_output=True, text=True, timeout=5).stdout.splitlines() if line]
        if changed:
            commit += (" (+ uncommitted changes: " + ", ".join(changed[:4])
                       + (", ..." if len(changed) > 4 else "") + ")")
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import twisted
    import autobahn

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
        "twisted": twisted.__version__, "autobahn": autobahn.__version__,
        "kernel": platform.release(), "commit": commit,
        "loadavg_at_start": os.getloadavg()[0],
    }


def format_table(results: list[dict[str, Any]], info: dict[str, Any], argv: list[str]) -> str:
    lines = [f"callapi bench  {info['date']}  nproc={info['nproc']}  python {info['python']}  "
             f"twisted {info['twisted']}  autobahn {info['autobahn']}  commit {info['commit']}  "
             f"loadavg {info['loadavg_at_start']:.2f}",
             "command: " + " ".join(argv), ""]
    load = [r for r in results if r["scenario"] != "idle"]
    if load:
        header = (f"{'scenario':<9} {'clients':>7} {'depth':>5} {'cmds':>7} {'cmd/s':>7} "
                  f"{'Started p50':>11} {'p99':>6} {'Success p50':>11} {'p99':>7} "
                  f"{'Ended p50':>9} {'p99':>7} {'errors':>6} "
                  f"{'hung':>4} {'RSS MiB':>7}  CPU% daemon/emu/clients")
        lines += [header, "-" * len(header)]
        for r in load:
            cpu = r["cpu_percent"]
            lines.append(
                f"{r['scenario']:<9} {r['clients']:>7} {r['depth']:>5} {r['commands']:>7} "
                f"{r['commands_per_s']:>7.0f} {_ms(r['started_p50_ms']):>11} {_ms(r['started_p99_ms']):>6} "
                f"{_ms(r.get('success_p50_ms')):>11} {_ms(r.get('success_p99_ms')):>7} "
                f"{_ms(r['ended_p50_ms']):>9} {_ms(r['ended_p99_ms']):>7} {r['errors']:>6} {r['hung']:>4} "
                f"{r['daemon_rss_mib']:>7.1f}  {cpu['daemon']:.0f}/{cpu['emulator']:.0f}/{cpu['clients']:.0f}")
        lines.append("latencies in ms, measured by the clients from sending the request; "
                     f"client = {load[0]['client']} x {load[0]['client_procs']} process(es)")
        if any(r["scenario"] in ("callstart", "blind") for r in load):
            lines.append("Success = CalleeAnswered (callstart) / TransferSuccessful (blind); these two "
                         "count a command (cmds, cmd/s) when its Success event arrives")
        for r in load:
            extra = []
            c = r.get("cleanup") or {}
            if c.get("commands") or c.get("errors") or c.get("hung"):
                extra.append(f"CallEnd of each new call (not measured above): {c['commands']} ended, "
                             f"p50/p99 {_ms(c['ended_p50_ms'])}/{_ms(c['ended_p99_ms'])} ms, "
                             f"{c['errors']} errors, {c['hung']} hung")
            if r.get("blind_spares_used") or r.get("blind_slots_stopped"):
                extra.append(f"transfers that left no new call: a spare call was used "
                             f"{r['blind_spares_used']} times; slots stopped without a call "
                             f"{r['blind_slots_stopped']}")
            if any(r["udp_drops"].values()):
                extra.append(f"UDP datagrams dropped by the kernel (receive buffer full): "
                             f"daemon {r['udp_drops']['daemon']}, emulator {r['udp_drops']['emulator']}")
            if r["bad_sequence"] or r["unexpected_messages"] or r["late"]:
                extra.append(f"Ended without Error but with an incomplete event sequence "
                             f"{r['bad_sequence']}; unexpected messages {r['unexpected_messages']}; "
                             f"Ended after being counted as hung {r['late']}")
            if (r.get("ended_max_ms") or 0) > 1000:
                extra.append(f"slowest command {r['ended_max_ms']:.0f} ms to Ended")
            for text, n in list(r["error_kinds"].items())[:3]:
                extra.append(f"{n} x error: {text}")
            for e in extra:
                lines.append(f"  {r['scenario']}: {e}")
    for r in results:
        if r["scenario"] == "idle":
            lines += ["",
                      f"{'scenario':<8} {'conns':>6} {'connect s':>9} {'RSS before':>10} {'RSS after':>9} "
                      f"{'KiB/conn':>8} {'echo check':>10} {'errors':>6} {'hung':>4}",
                      f"{'idle':<8} {r['connections']:>6} {r['connect_seconds']:>9.1f} "
                      f"{r['rss_before_mib']:>10.1f} {r['rss_after_mib']:>9.1f} "
                      f"{r['kib_per_connection']:>8.1f} {r['liveness_echo']:>10} {r['errors']:>6} {r['hung']:>4}",
                      "RSS in MiB (VmRSS of the daemon process)"]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/bench.py",
        description="Benchmark the callapi daemon against the OpenSIPS emulator (127.0.0.1 only).")
    p.add_argument("--scenario", choices=SCENARIOS + ("all",), default="all")
    p.add_argument("--clients", type=int, default=100, help="concurrent WebSocket clients (echo, hold)")
    p.add_argument("--depth", type=int, default=1,
                   help="commands in flight per client (pipeline depth); hold uses one call per slot")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--duration", type=float, default=None,
                     help="measured seconds per load scenario, after --warmup [default 15]")
    run.add_argument("--commands", type=int, default=None,
                     help="run this many commands per load scenario instead of a duration")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--blind-spare-calls", type=int, default=100,
                   help="blind: emulator calls beyond one per slot, for slots whose transfer "
                        "failed (a failed transfer leaves no new call to go on with)")
    p.add_argument("--idle-clients", type=int, default=10000)
    p.add_argument("--idle-check", type=int, default=100,
                   help="Echo on this many of the idle connections afterwards (liveness)")
    p.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    p.add_argument("--client", choices=("raw", "autobahn"), default="raw",
                   help="client WebSocket implementation: a minimal RFC 6455 client "
                        "(default, cheap) or Autobahn's")
    p.add_argument("--hang-timeout", type=float, default=10.0,
                   help="a command without Ended after this many seconds counts as hung")
    p.add_argument("--connect-timeout", type=float, default=90.0)
    p.add_argument("--connect-concurrency", type=int, default=200,
                   help="WebSocket handshakes in flight per client process")
    p.add_argument("--daemon-log-level", default="info",
                   choices=("debug", "info", "warn", "error", "critical"),
                   help="twist --log-level of the daemon [default info, as deployed]")
    p.add_argument("--daemon-wrapper", metavar="SCRIPT",
                   help="run the daemon as 'python SCRIPT <twist arguments>' instead of "
                        "'python -m twisted ...' (to try a monkeypatched fix without editing "
                        "the daemon; SCRIPT must end by running twist, see bench/README.md)")
    p.add_argument("--emulator-fast-purge", action="store_true",
                   help="run the emulator with an O(1) purge of ended dialogs instead of its "
                        "scan of every dialog on every MI request (an experiment: as is, that "
                        "scan limits callstart and blind; see docs/benchmarks.md)")
    p.add_argument("--path", default="/call-api")
    p.add_argument("--max-runtime", type=float, default=None,
                   help="hard limit for the whole run, seconds [default: from the scenarios]")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep-logs", action="store_true", help="keep the process logs (path on stderr)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        if args.duration is None and args.commands is None:
            args.duration = 15.0
        for name in ("clients", "depth", "idle_clients", "client_procs"):
            if getattr(args, name) <= 0:
                p.error(f"--{name.replace('_', '-')} must be positive")
        if args.blind_spare_calls < 0:
            p.error("--blind-spare-calls must not be negative")
        if args.duration is not None and args.duration <= 0:
            p.error("--duration must be positive")
        if args.commands is not None and args.commands <= 0:
            p.error("--commands must be positive")
    return args


class _Deadline(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--emulator-main"]:
        return emulator_fast_purge_main(argv[1:])
    args = parse_args(argv)
    if args.worker is not None:
        with open(args.worker) as f:
            worker_main(json.load(f))
        return 0
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.max_runtime is None:
        per_load = 30 + args.warmup + (args.duration or 60) + args.hang_timeout
        args.max_runtime = sum(per_load if s != "idle" else 30 + args.connect_timeout for s in scenarios)
    limit = raise_nofile_limit()
    if "idle" in scenarios and limit < args.idle_clients // max(1, args.client_procs) + 100:
        log(f"warning: RLIMIT_NOFILE is {limit}; {args.idle_clients} idle clients may not fit")

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Deadline()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # even when started with SIGINT ignored (&)
    signal.alarm(int(args.max_runtime) + 1)
    deadline = time.monotonic() + args.max_runtime
    info = machine_info()
    results: list[dict[str, Any]] = []
    status = 0
    try:
        for name in scenarios:
            log(f"{name}: starting")
            try:
                result = run_scenario(name, args, deadline)
            except BenchError as e:
                log(f"{name}: FAILED: {e}")
                result = {"scenario": name, "failed": str(e)}
                status = 1
            results.append(result)
            if "failed" not in result:
                log(f"{name}: done")
    except _Deadline:
        log(f"stopped: --max-runtime {args.max_runtime:.0f} s exceeded")
        status = 1
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        signal.alarm(0)
    ok = [r for r in results if "failed" not in r]
    if args.json:
        print(json.dumps({"machine": info, "command": " ".join(["bench/bench.py", *argv]),
                          "results": results}, indent=2))
    else:
        print(format_table(ok, info, ["bench/bench.py", *argv]))
        for r in results:
            if "failed" in r:
                print(f"{r['scenario']}: FAILED: {r['failed']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
