"""
The emulator's Event Interface (EVI, OpenSIPS core + C{event_datagram}):
the event list, subscriptions with their whole-second expiry, delivery of
event datagrams, and the MI commands C{events_list}, C{event_subscribe},
C{subscribers_list} and C{raise_event}.

Traces followed (under C{../shared/opensips-traces}):
C{3.4/which_and_meta.jsonl} and C{4.0/which_and_meta.jsonl} (the event
ids), C{3.4/h_subscription_expiry.jsonl} (expiry, lazy C{expire: 0},
C{raise_event}), C{3.4/h_subscribers_list_bug.jsonl} and
C{4.0/h_subscribers_list_bug.jsonl} (3.4's purge bug, fixed in 4.0),
C{3.4/h_errors.jsonl} ids 9-15 (C{event_subscribe} validation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.interfaces import IReactorTime

from callapi.emulator.mi_table import (
    Handler,
    MIError,
    Respond,
    dumps,
    encode_event,
    invalid_params,
    param_int,
    param_str,
)
from callapi.logging import logger

#: EVI events and their ids (3.4/which_and_meta.jsonl "events_list",
#: 4.0/which_and_meta.jsonl "evi:list": two new core events shift the ids).
EVENTS = {
    "3.4": [
        "E_CORE_SR_STATUS_CHANGED",
        "E_CORE_THRESHOLD",
        "E_CORE_SHM_THRESHOLD",
        "E_CORE_PKG_THRESHOLD",
        "E_CORE_PROC_AUTO_SCALE",
        "E_CORE_TCP_DISCONNECT",
        "E_DLG_STATE_CHANGED",
        "E_CALL_TRANSFER",
        "E_CALL_HOLD",
        "E_CORE_LOG",
    ],
    "4.0": [
        "E_CORE_SR_STATUS_CHANGED",
        "E_CORE_THRESHOLD",
        "E_CORE_SHM_THRESHOLD",
        "E_CORE_PKG_THRESHOLD",
        "E_CORE_PROC_AUTO_SCALE",
        "E_CORE_TCP_DISCONNECT",
        "E_PROFILING_SCRIPT",
        "E_PROFILING_PROC",
        "E_DLG_STATE_CHANGED",
        "E_CALL_TRANSFER",
        "E_CALL_HOLD",
        "E_CORE_LOG",
    ],
}

#: Default C{expire} of event_subscribe (3.4/h_subscription_expiry.jsonl id 20).
DEFAULT_EXPIRE = 3600


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


def valid_socket(socket: str) -> bool:
    """event_datagram accepts C{udp:host:port} and C{unix:/path} only
    (3.4/h_errors.jsonl id 10: C{tcp:} -> 400)."""
    if socket.startswith("unix:"):
        return len(socket) > len("unix:")
    if not socket.startswith("udp:"):
        return False
    host, _, port = socket[4:].rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


class EventInterface:
    """
    Subscriptions per event (newest first) and delivery of event datagrams.

    @param clock: its whole seconds time the subscriptions.
    @param version: C{"3.4"} or C{"4.0"} (event ids, the subscribers_list bug).
    @param send_event: C{send_event(socket, datagram)} delivers one datagram
        to a subscriber socket such as C{"udp:127.0.0.1:9921"}.
    @param lose: C{lose(event)} is asked before each datagram; C{True} drops
        it unsent (fault injection, L{callapi.emulator.faults}).
    """

    _log = logger()

    def __init__(
        self,
        clock: IReactorTime,
        version: str,
        send_event: Callable[[str, bytes], None],
        lose: Callable[[str], bool] | None = None,
    ) -> None:
        self._clock = clock
        self._lose = lose
        self._version = version
        self._send_event = send_event
        self.names = EVENTS[version]
        self._subs: dict[str, list[_Subscription]] = {}

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {
            "evi:list": self._cmd_events_list,
            "evi:subscribe": self._cmd_subscribe,
            "evi:subscribers": self._cmd_subscribers,
            "evi:raise": self._cmd_raise,
        }

    def _now(self) -> int:
        return int(self._clock.seconds())

    @property
    def subscribers(self) -> dict[tuple[str, str], SubscriptionInfo]:
        """(event, socket) -> L{SubscriptionInfo}, expired ones included until
        they are purged (by raising that event)."""
        out = {}
        for event, subs in self._subs.items():
            for s in subs:
                out[(event, s.socket)] = SubscriptionInfo(s.expire, s.since, s.since + s.expire)
        return out

    def forget(self) -> None:
        """Drop every subscription (an OpenSIPS restart: they live in memory only)."""
        self._subs.clear()

    def subscribe(self, event: str, socket: str, expire: int) -> None:
        """Subscribe, or refresh the subscription of C{socket} (no validation)."""
        subs = self._subs.setdefault(event, [])
        for s in subs:
            if s.socket == socket:
                s.expire = expire
                s.since = self._now()
                return
        # new subscriptions go in front (3.4/h_subscribers_list_bug NOTE
        # "our subscription ... is added in front of the now expired X")
        subs.insert(0, _Subscription(event, socket, expire, self._now()))

    def raise_event(
        self, event: str, params: dict[str, Any] | None = None, *, datagram: bytes | None = None
    ) -> bool:
        """
        Deliver one event to its live subscribers, purging expired ones
        (3.4/h_subscription_expiry.jsonl: the first raise after expiry answers
        "OK" and delivers nothing, the next one 480).

        @param datagram: sent as is instead of encoding C{event}/C{params}.
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
            if self._lose is not None and self._lose(event):
                self._log.debug(
                    "EVI {event} -> {socket} LOST (fault injection)", event=event, socket=s.socket
                )
                continue
            self._log.debug("EVI {event} -> {socket}", event=event, socket=s.socket)
            try:
                self._send_event(s.socket, data)
            except Exception:
                self._log.failure("EVI send to {socket} failed", socket=s.socket)
        return had

    # -- MI commands ---------------------------------------------------

    def _cmd_events_list(self, params: dict[str, Any], respond: Respond) -> Any:
        """C{events_list} / C{evi:list} (which_and_meta of both versions)."""
        return {"Events": [{"name": n, "id": i} for i, n in enumerate(self.names)]}

    def _cmd_subscribe(self, params: dict[str, Any], respond: Respond) -> Any:
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
        if event not in self.names or not valid_socket(socket):
            raise MIError(400, "Bad parameter value")
        if expire < 0:
            raise invalid_params("Negative expire value")
        self.subscribe(event, socket, expire)
        return "OK"

    def _cmd_subscribers(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{subscribers_list} [event [socket]].  3.4 bug reproduced
        (3.4/h_subscribers_list_bug.jsonl): the purge never advances its
        C{prev} pointer, so every subscriber in front of an expired one is
        unlinked too; fixed in 4.0 (4.0/h_subscribers_list_bug.jsonl).
        """
        event = param_str(params, "event")
        socket = param_str(params, "socket")
        now = self._now()
        if event is not None and event not in self.names:
            raise MIError(404, "Unknown event")
        for name in [event] if event else list(self._subs):
            subs = self._subs.get(name, [])
            if self._version == "3.4":
                last = max((i for i, s in enumerate(subs) if s.expired(now)), default=-1)
                del subs[: last + 1]
            else:
                subs[:] = [s for s in subs if not s.expired(now)]

        def entry(name: str, only: str | None = None) -> dict[str, Any]:
            subs = [s for s in self._subs.get(name, []) if only is None or s.socket == only]
            if not subs:
                return {}
            listed = []
            for s in subs:
                ttl = s.since + s.expire - now
                listed.append({"socket": s.socket, "expire": s.expire, "ttl": ttl if ttl > 0 else "expired"})
            return {"name": name, "id": self.names.index(name), "Subscribers": listed}

        if event is not None:
            return {"Event": entry(event, socket)}
        events = [entry(n) for n in self.names]
        return {"Events": [e for e in events if e]}

    def _cmd_raise(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{raise_event} (3.4/h_subscription_expiry.jsonl ids 22-26): C{params}
        must be a JSON string of an object or an array (values become params
        with empty names); an object -> 400 "No Params"; unknown event -> 404
        "Event not registered"; no subscriber -> 480 "Temporarily
        Unavailable".
        """
        event = param_str(params, "event") or ""
        if event not in self.names:
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
                pairs = ",".join(
                    '"":' + dumps(v if isinstance(v, str) else json.dumps(v)).decode("utf-8") for v in raw
                )
                datagram = (
                    b'{"jsonrpc":"2.0","method":'
                    + dumps(event)
                    + b',"params":{'
                    + pairs.encode("utf-8")
                    + b"}}"
                )
            else:
                raise MIError(400, "No Params")
        if not self._subs.get(event):
            raise MIError(480, "Temporarily Unavailable")
        self.raise_event(event, evparams, datagram=datagram)
        return "OK"
