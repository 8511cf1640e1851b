"""
OpenSIPS Management Interface client over a datagram socket.

OpenSIPS' C{mi_datagram} module takes one JSON-RPC 2.0 request per datagram
(UDP or unix datagram socket) and answers to the request's source address
with a datagram carrying the same C{id} (3.4 README, "MI datagram
transport").  Replies can reach ~64 KiB; some commands (C{t_uac_dlg} with
tm's C{pass_provisional_replies}) send several datagrams for one id, the
provisional ones first (trace C{b_click_to_dial_pass_provisional_replies}).
On malformed input OpenSIPS answers with plain text (C{400 Parse_error},
trace C{h_errors}): such datagrams cannot be matched and are logged and
dropped.
"""

from __future__ import annotations

import itertools
import json
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


@implementer(IMIClient)
class MIClientProtocol(DatagramProtocol):
    """
    One datagram socket carrying every MI request of the daemon.

    Matches replies to requests by id (the id is compared as text, so a peer
    that echoes C{5} as C{"5"} still matches), keeps a per-request timer, and
    fails everything pending when the socket stops.

    @ivar pending: request id -> L{_Pending}; see L{IMIClient.pending}.
    @ivar stats: counters C{sent}, C{replies}, C{timeouts}, C{dropped}.
    """

    noisy = False
    _log = logger()

    def __init__(
        self, clock: IReactorTime, peer: Any = None, timeout: float = 5.0, first_id: int = 1
    ) -> None:
        """
        @param clock: where request timers run.
        @param peer: destination for C{transport.write}: an C{(ip, port)}
            tuple (UDP) or a socket path (unix datagram); replies from any
            other address are dropped.  C{None}: a connected socket (tests).
        @param timeout: default seconds to wait for a final reply.
        @param first_id: the first request id (the daemon starts at a random
            one, so ids are not guessable by a source-spoofing attacker).
        """
        self._clock = clock
        self.peer = peer
        self.timeout = timeout
        self._ids = itertools.count(first_id)
        self.pending: dict[str, _Pending] = {}
        self.stats = {"sent": 0, "replies": 0, "timeouts": 0, "dropped": 0}
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
        request_id = next(self._ids)
        key = str(request_id)
        wait = self.timeout if timeout is None else timeout

        def cancel(_: Deferred[Any]) -> None:
            entry = self.pending.pop(key, None)
            if entry is not None and entry.timer is not None and entry.timer.active():
                entry.timer.cancel()

        d: Deferred[Any] = Deferred(cancel)
        entry = _Pending(method, params, d)
        datagram = encode_request(request_id, method, params)
        self.pending[key] = entry
        entry.timer = self._clock.callLater(wait, self._expired, key, method, wait)
        self._log.debug(
            "MI request {mi_id} {mi_method} {params}", mi_id=request_id, mi_method=method, params=params
        )
        try:
            if self.peer is None:
                # IUDPTransport.write declares addr without its default (None);
                # a connected transport (peer None) is written to without one.
                self.transport.write(datagram)  # type: ignore[call-arg]
            else:
                self.transport.write(datagram, self.peer)
        except Exception as e:  # socket errors: message too long, unreachable ...
            self.pending.pop(key, None)
            entry.timer.cancel()
            d.errback(MIUnavailable(f"cannot send MI {method}: {e}"))
            return d
        self.stats["sent"] += 1
        return d

    def _expired(self, key: str, method: str, wait: float) -> None:
        entry = self.pending.pop(key, None)
        if entry is None:
            return
        entry.timer = None
        self.stats["timeouts"] += 1
        self._log.warn(
            "MI request {mi_id} {mi_method} timed out after {timeout} s",
            mi_id=key,
            mi_method=method,
            timeout=wait,
        )
        entry.deferred.errback(MITimeout(method, wait))

    # DatagramProtocol

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Match one reply datagram to its request.  Anything unexpected
        (from another address than the MI peer, non-JSON, not an object,
        unknown or late id) is logged and dropped.
        """
        if self.peer is not None and not _same_address(addr, self.peer):
            self.stats["dropped"] += 1
            self._log.warn(
                "dropped a datagram from {addr}, not from OpenSIPS MI {peer}", addr=addr, peer=self.peer
            )
            return
        try:
            reply = json.loads(data)
        except (ValueError, RecursionError):
            self.stats["dropped"] += 1
            self._log.warn("MI sent a non-JSON datagram, dropped: {text!r}", text=data[:200])
            return
        if not isinstance(reply, dict) or "id" not in reply:
            self.stats["dropped"] += 1
            self._log.warn("MI sent an unexpected datagram, dropped: {text!r}", text=data[:200])
            return
        key = str(reply["id"])
        entry = self.pending.get(key)
        if entry is None:
            self.stats["dropped"] += 1
            self._log.warn("MI reply for unknown or expired id {mi_id} dropped", mi_id=reply["id"])
            return
        error = reply.get("error")
        if error is None and is_provisional(reply.get("result")):
            self._log.debug(
                "MI provisional reply {mi_id} {status}", mi_id=key, status=reply["result"].get("Status")
            )
            return
        del self.pending[key]
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
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
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(MIUnavailable(f"stopped while waiting for {entry.method}"))
