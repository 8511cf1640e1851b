"""
EVI events from OpenSIPS: one receiving datagram socket, routing to the
commands that wait for them, and the C{event_subscribe} bookkeeping.

OpenSIPS' C{event_datagram} module sends each event as one JSON-RPC 2.0
notification datagram C{{"jsonrpc": "2.0", "method": "E_...", "params":
{...}}}, from several source ports (one per OpenSIPS process), so events
can be reordered or lost (3.4 README, "Events in general").  Subscriptions
expire silently after C{expire} seconds and vanish on an OpenSIPS restart
("Expiry", trace C{h_subscription_expiry}); L{SubscriptionManager} therefore
re-subscribes periodically, well before expiry.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from callapi.logging import logger
from zope.interface import implementer

from callapi.errors import MIError
from callapi.interfaces import IEventHub, IMIClient, ISubscription

Handler = Callable[[dict[str, Any]], None]

#: The events callapi's commands need (callops and dialog modules).
EVENTS = ("E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED")


@implementer(ISubscription)
class _Registration:
    __slots__ = ("_table", "_key", "handler", "active", "__weakref__")

    def __init__(self, table: dict[Any, dict["_Registration", None]], key: Any,
                 handler: Handler) -> None:
        self._table = table
        self._key = key
        self.handler = handler
        self.active = True

    def cancel(self) -> None:
        self.active = False
        bucket = self._table.get(self._key)
        if bucket is not None:
            bucket.pop(self, None)
            if not bucket:
                del self._table[self._key]


@implementer(IEventHub)
class EventHub:
    """
    Routes events by C{(event name, Call-ID)} (and E_CALL_TRANSFER also by
    C{transfer_callid}) with two dictionary lookups, whatever the number of
    running commands.

    @ivar stats: counters C{received}, C{delivered}, C{unrouted}.
    """

    _log = logger()

    def __init__(self) -> None:
        self._by_callid: dict[tuple[str, str], dict[_Registration, None]] = {}
        self._by_transfer: dict[str, dict[_Registration, None]] = {}
        self.stats = {"received": 0, "delivered": 0, "unrouted": 0}

    def listen(self, event: str, callid: str, handler: Handler) -> ISubscription:
        """
        See L{IEventHub.listen}.
        """
        key = (event, callid)
        registration = _Registration(self._by_callid, key, handler)
        self._by_callid.setdefault(key, {})[registration] = None
        return registration

    def listen_transfer(self, transfer_callid: str, handler: Handler) -> ISubscription:
        """
        See L{IEventHub.listen_transfer}.
        """
        registration = _Registration(self._by_transfer, transfer_callid, handler)
        self._by_transfer.setdefault(transfer_callid, {})[registration] = None
        return registration

    @property
    def registrations(self) -> int:
        """
        Number of live registrations (for leak checks and the manhole).
        """
        return sum(map(len, self._by_callid.values())) + sum(map(len, self._by_transfer.values()))

    def dispatch(self, event: str, params: dict[str, Any]) -> None:
        """
        Deliver one event to every registration that matches it.

        @param event: the notification's C{method}, e.g. C{"E_CALL_HOLD"}.
        @param params: its C{params} object.
        """
        self.stats["received"] += 1
        handlers: list[_Registration] = []
        callid = params.get("callid")
        if isinstance(callid, str):
            handlers.extend(self._by_callid.get((event, callid), ()))
        if event == "E_CALL_TRANSFER":
            transfer_callid = params.get("transfer_callid")
            if isinstance(transfer_callid, str):
                handlers.extend(r for r in self._by_transfer.get(transfer_callid, ())
                                if r not in handlers)
        if not handlers:
            self.stats["unrouted"] += 1
            self._log.debug("event {event} for Call-ID {callid} has no listener",
                            event=event, callid=callid)
            return
        for registration in handlers:
            if not registration.active:  # cancelled by an earlier handler
                continue
            self.stats["delivered"] += 1
            try:
                registration.handler(params)
            except Exception:
                self._log.failure("event handler failed for {event} {callid}",
                                  event=event, callid=callid)


class EventReceiverProtocol(DatagramProtocol):
    """
    The socket named in C{event_subscribe}: decodes EVI notification
    datagrams and hands them to an L{EventHub}.  Junk (non-JSON, not a
    notification, params not an object) is logged and dropped, and so is
    any UDP datagram from an address not in C{sources} (forged events could
    otherwise end or "complete" calls by Call-ID).

    @ivar sources: the IP addresses events are accepted from; C{None} = any
        (unix sockets, or C{--events-from any}).
    """

    noisy = False
    _log = logger()

    def __init__(self, hub: EventHub, sources: set[str] | None = None) -> None:
        self._hub = hub
        self.sources = sources
        self.dropped = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if (self.sources is not None and isinstance(addr, tuple)
                and addr[0] not in self.sources):
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, 8th ...: no log flood
                self._log.warn("dropped an event datagram from {addr}: not from OpenSIPS "
                               "({sources}; see --events-from); {count} so far",
                               addr=addr, sources=sorted(self.sources), count=self.dropped)
            return
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            message = None
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("method"), str)
            or not isinstance(message.get("params"), dict)
        ):
            self.dropped += 1
            self._log.warn("dropped a datagram that is not an EVI event from {addr}: {text!r}",
                           addr=addr, text=data[:200])
            return
        self._hub.dispatch(message["method"], message["params"])


class SubscriptionManager:
    """
    Keeps OpenSIPS subscribed to C{events} on C{socket}.

    Subscribes at L{start}, then re-subscribes every C{refresh} seconds
    (re-subscribing the same socket refreshes it; trace
    C{h_subscription_expiry}), which also restores delivery after an
    OpenSIPS restart.  L{stop} unsubscribes with C{expire: 0}.

    @ivar status: event -> C{{"ok": bool, "at": clock seconds, "error": str|None}}.
    """

    _log = logger()

    def __init__(self, clock: IReactorTime, mi: IMIClient, socket: str,
                 expire: int = 120, refresh: float | None = None,
                 events: Iterable[str] = EVENTS, subscribe_method: str = "event_subscribe") -> None:
        """
        @param socket: what OpenSIPS sends to, C{"udp:IP:PORT"} or C{"unix:/path"}.
        @param expire: the C{expire} sent to OpenSIPS, in seconds (> 0).
        @param refresh: seconds between re-subscriptions; default
            C{min(expire / 3, 60)}, so a lost refresh is not fatal.
        """
        if expire <= 0:
            raise ValueError("expire must be positive")
        self._clock = clock
        self._mi = mi
        self.socket = socket
        self.expire = int(expire)
        self.refresh = refresh if refresh is not None else max(1.0, min(expire / 3.0, 60.0))
        self.events = tuple(events)
        self.subscribe_method = subscribe_method
        #: called before each round; its Deferred is awaited (errors ignored)
        self.before_round: Callable[[], Deferred[Any]] | None = None
        self.status: dict[str, dict[str, Any]] = {}
        self._timer: IDelayedCall | None = None
        self._running = False
        self._stopped = False

    def start(self) -> Deferred[None]:
        """
        Subscribe now and schedule refreshes.

        @return: a Deferred that fires (never fails) when the first round of
            answers came; failures are logged and retried at the next refresh.
        """
        if self._stopped:
            return succeed(None)
        self._running = True
        return self._subscribe_all()

    def _subscribe_all(self) -> Deferred[None]:
        self._timer = None
        if self.before_round is not None:
            d = self.before_round()
            d.addBoth(lambda _: self._round())
        else:
            d = self._round()

        def reschedule(_: Any) -> None:
            if self._running:
                self._timer = self._clock.callLater(self.refresh, self._subscribe_all)

        d.addCallback(reschedule)
        return d.addCallback(lambda _: None)

    def _round(self) -> Deferred[Any]:
        if not self._running:
            return succeed(None)  # stopped meanwhile
        rounds = [self._subscribe(event, self.expire) for event in self.events]
        return DeferredList(rounds, consumeErrors=True)

    def _subscribe(self, event: str, expire: int, timeout: float | None = None) -> Deferred[Any]:
        d = self._mi.call(self.subscribe_method,
                          {"event": event, "socket": self.socket, "expire": expire}, timeout)

        def ok(_: Any) -> None:
            was = self.status.get(event, {}).get("ok")
            self.status[event] = {"ok": True, "at": self._clock.seconds(), "error": None}
            if expire and not was:
                self._log.info("subscribed to {event} on {socket} (expire {expire} s)",
                               event=event, socket=self.socket, expire=expire)

        def failed(reason: Any) -> None:
            self.status[event] = {"ok": False, "at": self._clock.seconds(),
                                  "error": str(reason.value)}
            log = self._log.error if isinstance(reason.value, MIError) else self._log.warn
            log("cannot subscribe to {event} on {socket}: {error}",
                event=event, socket=self.socket, error=str(reason.value))

        return d.addCallbacks(ok, failed)

    def stop(self, timeout: float | None = 2.0) -> Deferred[None]:
        """
        Cancel the refresh timer and unsubscribe (C{expire: 0}).

        @param timeout: seconds to wait for OpenSIPS' answers (shutdown
            should not hang on an unreachable proxy); C{None}: the MI
            client's default.
        @return: a Deferred that fires when OpenSIPS answered (or the MI
            requests failed); never fails.
        """
        self._running = False
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rounds = [self._subscribe(event, 0, timeout) for event in self.events]
        return DeferredList(rounds, consumeErrors=True).addCallback(lambda _: None)

