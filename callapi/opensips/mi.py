"""
OpenSIPS Management Interface client over a datagram socket.

OpenSIPS' C{mi_datagram} module takes one JSON-RPC 2.0 request per datagram
(UDP or unix datagram socket) and answers to the request's source address
with a datagram carrying the same C{id} (3.4 README, "MI datagram
transport").  Replies can reach ~64 KiB; some commands (C{t_uac_dlg} with
tm's C{pass_provisional_replies}) send several datagrams for one id, the
provisional ones first (trace C{b_click_to_dial_pass_provisional_replies}).
On malformed or oversized input OpenSIPS answers with plain text
(C{400 Parse_error}, C{500 Internal error}, trace C{h_errors}), without an
id: such a reply fails the request it can be tied to (exactly one request
pending), else it is remembered so that the next timeout says a non-JSON
datagram arrived.

Idempotent requests (L{IDEMPOTENT}: C{dlg_end_dlg}, C{dlg_list},
C{event_subscribe}, C{which}, C{uptime} and their 4.0 names) are re-sent
with a fresh id, up to C{retries} times, when a share of their timeout
passes without a reply: the request's timeout still bounds the whole
wait, split evenly over the sends (5 s and 2 retries: sent at 0, 1.67 and
3.33 s, failed at 5 s).  A reply to any of the ids answers the request.
Other requests (C{t_uac_dlg}, C{call_transfer}, C{call_hold} ...) are
never re-sent: their outcome is learnt from events and the dialog registry.

Replies to requests that were cancelled or timed out (their command ended)
are counted as C{late} and logged at debug; datagrams from elsewhere or
that are not MI replies are counted as C{dropped} and logged as warnings.
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from callapi.errors import MIError, MITimeout, MIUnavailable
from callapi.interfaces import IMIClient
from callapi.logging import logger

#: Largest datagram OpenSIPS may send back (Twisted's default is 8192).
MAX_DATAGRAM = 65535

#: MI commands that may be sent twice with the same effect (3.x and 4.0
#: names, 4.0 README "MI command names"): re-sent on timeout.  A repeated
#: C{dlg_end_dlg} answers 404 when the first one ended the dialog (3.4
#: README "dlg_end_dlg / dlg_list"); the caller treats that as done.
IDEMPOTENT = frozenset(
    {
        "dlg_end_dlg",
        "dialog:end_dlg",
        "dlg_list",
        "dialog:list",
        "event_subscribe",
        "evi:subscribe",
        "which",
        "core:which",
        "uptime",
        "core:uptime",
    }
)

#: How many ids of ended requests are remembered to tell late replies from junk.
FORGOTTEN_IDS = 4096


class MITimeoutAfterText(MITimeout):
    """
    An L{MITimeout} while a plain-text datagram (C{400 Parse_error} ...,
    trace C{h_errors}) that could not be tied to a request had arrived.

    @ivar text: the datagram's text (at most 200 characters).
    """

    def __init__(self, method: str, timeout: float, text: str) -> None:
        super().__init__(method, timeout)
        self.text = text

    def __str__(self) -> str:
        return f"{super().__str__()} (a non-JSON datagram arrived meanwhile: {self.text!r})"


def plain_text_error(data: bytes) -> tuple[int, str] | None:
    """
    C{(code, text)} for a plain-text MI reply such as C{b"500 Internal error"}
    (trace 3.4 C{h_errors}), else C{None}.
    """
    text = data[:200].decode("utf-8", "replace").strip()
    if len(text) >= 3 and text[:3].isdigit() and (len(text) == 3 or text[3] == " "):
        return int(text[:3]), text[4:] or text
    return None


def encode_request(request_id: int, method: str, params: dict[str, Any] | None) -> bytes:
    """
    Build one MI request datagram.

    The C{method} member is always a non-empty string and the message is
    never a batch: a request without a string method makes OpenSIPS 4.0.1
    exit (4.0 README, "h_mi_crash").

    @raise ValueError: C{method} is not a non-empty string.
    """
    if not isinstance(method, str) or not method:
        raise ValueError(f"MI method must be a non-empty string, not {method!r}")
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def is_provisional(result: Any) -> bool:
    """
    C{True} for a provisional t_uac_dlg reply such as
    C{{"Status": "180 Ringing", "Message": ...}} (sent before the final reply
    with the same id when tm's C{pass_provisional_replies} is on).
    """
    if not isinstance(result, dict):
        return False
    status = result.get("Status")
    return isinstance(status, str) and len(status) >= 3 and status[0] == "1" and status[:3].isdigit()


def _same_address(addr: Any, peer: Any) -> bool:
    """
    Whether a datagram's source C{addr} is the MI peer: C{(ip, port)} for
    UDP, the socket path for unix datagrams (mi_datagram answers from its
    own socket).
    """
    if isinstance(peer, tuple):
        return isinstance(addr, tuple) and tuple(addr[:2]) == peer
    if isinstance(addr, bytes):
        addr = addr.decode("utf-8", "replace")
    return addr == peer


@attrs.define
class _Pending:
    method: str
    params: dict[str, Any] | None
    deferred: Deferred[Any]
    timer: IDelayedCall | None = None
    #: every id this request was sent with (re-sent ones too)
    keys: list[str] = attrs.Factory(list)
    #: sends left after a timeout (idempotent requests only)
    retries: int = 0
    #: clock seconds when it was first sent
    sent_at: float | None = None
    #: the whole wait, seconds (what L{MITimeout} reports)
    timeout: float = 0.0


@implementer(IMIClient)
class MIClientProtocol(DatagramProtocol):
    """
    One datagram socket carrying every MI request of the daemon.

    Matches replies to requests by id (the id is compared as text, so a peer
    that echoes C{5} as C{"5"} still matches), keeps a per-request timer, and
    fails everything pending when the socket stops.

    @ivar pending: request id -> L{_Pending}; see L{IMIClient.pending}.
        A re-sent request is there under each of its ids.
    @ivar stats: counters C{sent} (datagrams, re-sends included),
        C{replies}, C{timeouts} (requests that failed with L{MITimeout}),
        C{retries} (re-sends), C{late} (replies to cancelled or timed out
        requests), C{text} (plain-text replies), C{dropped} (foreign or junk
        datagrams).
    @ivar retries: re-sends of an idempotent request after a timeout.
    @ivar reply_observers: called with no argument for every datagram from
        the MI peer (any reply is a proof of life, L{callapi.opensips.liveness}).
    """

    noisy = False
    _log = logger()

    def __init__(
        self,
        clock: IReactorTime,
        peer: Any = None,
        timeout: float = 5.0,
        first_id: int = 1,
        retries: int = 2,
    ) -> None:
        """
        @param clock: where request timers run.
        @param peer: destination for C{transport.write}: an C{(ip, port)}
            tuple (UDP) or a socket path (unix datagram); replies from any
            other address are dropped.  C{None}: a connected socket (tests).
        @param timeout: default seconds to wait for a final reply.
        @param first_id: the first request id (the daemon starts at a random
            one, so ids are not guessable by a source-spoofing attacker).
        @param retries: re-sends of an L{IDEMPOTENT} request, each after
            C{timeout / (retries + 1)} seconds without a reply; the request
            still fails after C{timeout} seconds in all.
        """
        self._clock = clock
        self.peer = peer
        self.timeout = timeout
        self._ids = itertools.count(first_id)
        self.pending: dict[str, _Pending] = {}
        self.retries = retries
        self.stats = {
            "sent": 0,
            "replies": 0,
            "timeouts": 0,
            "retries": 0,
            "late": 0,
            "text": 0,
            "dropped": 0,
        }
        self.reply_observers: list[Callable[[], None]] = []
        self._forgotten: OrderedDict[str, None] = OrderedDict()
        self._unmatched_text: tuple[float, str] | None = None
        self._stopped = False

    # IMIClient

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        See L{IMIClient.call}.
        """
        if self.transport is None or self._stopped:
            return fail(MIUnavailable("MI socket is not running"))
        wait = self.timeout if timeout is None else timeout

        def cancel(_: Deferred[Any]) -> None:
            self._forget(entry)

        d: Deferred[Any] = Deferred(cancel)
        retries = max(0, self.retries) if method in IDEMPOTENT else 0
        entry = _Pending(method, params, d, retries=retries, timeout=wait)
        error = self._send(entry)
        if error is not None:
            d.errback(error)
        return d

    def _send(self, entry: _Pending) -> MIUnavailable | None:
        """
        Send C{entry} with a fresh id and start its timer, which runs to the
        end of this send's share of the timeout (counted from the first
        send, so late timers do not add up).

        @return: the error when the socket refused the datagram, else C{None}.
        """
        request_id = next(self._ids)
        key = str(request_id)
        datagram = encode_request(request_id, entry.method, entry.params)
        self.pending[key] = entry
        entry.keys.append(key)
        now = self._clock.seconds()
        if entry.sent_at is None:
            entry.sent_at = now
        sends = entry.retries + len(entry.keys)
        deadline = entry.sent_at + entry.timeout * len(entry.keys) / sends
        entry.timer = self._clock.callLater(max(0.0, deadline - now), self._expired, entry)
        self._log.debug(
            "MI request {mi_id} {mi_method} {params}",
            mi_id=request_id,
            mi_method=entry.method,
            params=entry.params,
        )
        try:
            if self.peer is None:
                # IUDPTransport.write declares addr without its default (None);
                # a connected transport (peer None) is written to without one.
                self.transport.write(datagram)  # type: ignore[call-arg,union-attr]
            else:
                self.transport.write(datagram, self.peer)  # type: ignore[union-attr]
        except Exception as e:  # socket errors: message too long, unreachable ...
            self._forget(entry, remember=False)
            return MIUnavailable(f"cannot send MI {entry.method}: {e}")
        self.stats["sent"] += 1
        return None

    def _forget(self, entry: _Pending, remember: bool = True) -> None:
        """
        Drop every id of C{entry} and its timer; with C{remember}, keep the
        ids (bounded) so that a late reply is told from junk.
        """
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        for key in entry.keys:
            if self.pending.get(key) is entry:
                del self.pending[key]
                if remember:
                    self._forgotten[key] = None
        while len(self._forgotten) > FORGOTTEN_IDS:
            self._forgotten.popitem(last=False)

    def _expired(self, entry: _Pending) -> None:
        entry.timer = None
        if entry.retries > 0 and not self._stopped:
            entry.retries -= 1
            self.stats["retries"] += 1
            self._log.info(
                "MI request {mi_id} {mi_method}: no reply; re-sending it ({left} more at most)",
                mi_id=entry.keys[-1],
                mi_method=entry.method,
                left=entry.retries,
            )
            error = self._send(entry)
            if error is not None:
                entry.deferred.errback(error)
            return
        self._forget(entry)
        self.stats["timeouts"] += 1
        self._log.warn(
            "MI request {mi_id} {mi_method} timed out after {timeout} s",
            mi_id=entry.keys[-1],
            mi_method=entry.method,
            timeout=entry.timeout,
        )
        text = self._unmatched_text
        if text is not None and entry.sent_at is not None and text[0] >= entry.sent_at:
            entry.deferred.errback(MITimeoutAfterText(entry.method, entry.timeout, text[1]))
        else:
            entry.deferred.errback(MITimeout(entry.method, entry.timeout))

    # DatagramProtocol

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Match one reply datagram to its request.  Datagrams from another
        address than the MI peer, non-JSON ones that are not an MI error
        text, and JSON that is not a reply are counted as C{dropped} and
        logged; replies to ended requests are counted as C{late}.
        """
        if self.peer is not None and not _same_address(addr, self.peer):
            self.stats["dropped"] += 1
            self._log.warn(
                "dropped a datagram from {addr}, not from OpenSIPS MI {peer}", addr=addr, peer=self.peer
            )
            return
        for observer in self.reply_observers:
            observer()
        try:
            reply = json.loads(data)
        except (ValueError, RecursionError):
            self._text_received(data)
            return
        if not isinstance(reply, dict) or "id" not in reply:
            self.stats["dropped"] += 1
            self._log.warn("MI sent an unexpected datagram, dropped: {text!r}", text=data[:200])
            return
        key = str(reply["id"])
        entry = self.pending.get(key)
        if entry is None:
            if key in self._forgotten:
                self.stats["late"] += 1
                self._log.debug("late MI reply for ended request {mi_id} dropped", mi_id=reply["id"])
            else:
                self.stats["dropped"] += 1
                self._log.warn("MI reply for unknown id {mi_id} dropped", mi_id=reply["id"])
            return
        error = reply.get("error")
        if error is None and is_provisional(reply.get("result")):
            self._log.debug(
                "MI provisional reply {mi_id} {status}", mi_id=key, status=reply["result"].get("Status")
            )
            return
        self._forget(entry)
        self.stats["replies"] += 1
        if error is not None:
            if isinstance(error, dict):
                code = error.get("code")
                failure = MIError(
                    entry.method,
                    code if isinstance(code, int) else -32603,
                    str(error.get("message", "")),
                    error.get("data"),
                )
            else:
                failure = MIError(entry.method, -32603, str(error))
            entry.deferred.errback(failure)
        elif "result" in reply:
            entry.deferred.callback(reply["result"])
        else:
            entry.deferred.errback(MIError(entry.method, -32603, "reply without result or error"))

    def _text_received(self, data: bytes) -> None:
        """
        A non-JSON datagram from the MI peer: OpenSIPS' plain-text error
        (C{500 Internal error}, C{400 Parse_error}, trace C{h_errors}) fails
        the one pending request; with none or several pending it is
        remembered for the timeout's text.
        """
        parsed = plain_text_error(data)
        if parsed is None:
            self.stats["dropped"] += 1
            self._log.warn("MI sent a non-JSON datagram, dropped: {text!r}", text=data[:200])
            return
        self.stats["text"] += 1
        code, text = parsed
        entries = {id(e): e for e in self.pending.values()}
        if len(entries) == 1:
            (entry,) = entries.values()
            self._forget(entry)
            self.stats["replies"] += 1
            self._log.warn(
                "OpenSIPS answered MI {mi_method} with plain text {text!r}",
                mi_method=entry.method,
                text=data[:200],
            )
            entry.deferred.errback(MIError(entry.method, code, text))
            return
        whole = data[:200].decode("utf-8", "replace").strip()
        self._unmatched_text = (self._clock.seconds(), whole)
        self._log.warn(
            "OpenSIPS sent plain text {text!r} that matches no single request ({count} pending)",
            text=whole,
            count=len(entries),
        )

    def startProtocol(self) -> None:
        self._stopped = False

    def connectionRefused(self) -> None:
        """
        The kernel reported ICMP port unreachable for our MI datagrams
        (connected UDP socket): OpenSIPS is not listening.  Pending requests
        still end by their own timeouts; this only logs.
        """
        self._log.warn("OpenSIPS MI refused a datagram (nothing listening?)")

    def stopProtocol(self) -> None:
        """
        Fail every pending request with L{MIUnavailable}.
        """
        self._stopped = True
        pending, self.pending = self.pending, {}
        for entry in {id(e): e for e in pending.values()}.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(MIUnavailable(f"stopped while waiting for {entry.method}"))
