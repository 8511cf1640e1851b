"""
EVI events from OpenSIPS: one receiving datagram socket and the routing to
the commands that wait for them.  Keeping OpenSIPS subscribed is
L{callapi.opensips.subscriptions}.

OpenSIPS' C{event_datagram} module sends each event as one JSON-RPC 2.0
notification datagram C{{"jsonrpc": "2.0", "method": "E_...", "params":
{...}}}, from several source ports (one per OpenSIPS process), so events
can be reordered or lost (3.4 README, "Events in general").  Subscriptions
expire silently after C{expire} seconds and vanish on an OpenSIPS restart
("Expiry", trace C{h_subscription_expiry}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from callapi.interfaces import IEventHub, ISubscription
from callapi.logging import logger

__all__ = ["EventHub", "EventReceiverProtocol", "Handler"]

Handler = Callable[[dict[str, Any]], None]


@implementer(ISubscription)
class _Registration:
    __slots__ = ("__weakref__", "_key", "_table", "active", "handler")

    def __init__(self, table: dict[Any, dict[_Registration, None]], key: Any, handler: Handler) -> None:
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
        self._observers: dict[_Registration, None] = {}
        self.stats = {"received": 0, "delivered": 0, "unrouted": 0}

    def observe(self, observer: Callable[[str, dict[str, Any]], None]) -> ISubscription:
        """
        Call C{observer(event, params)} for every dispatched event, before
        it is routed (the dialog registry follows all dialogs this way).
        It runs on the hot path: keep it O(1); exceptions are logged and
        swallowed.
        """
        registration = _Registration({None: self._observers}, None, observer)  # type: ignore[arg-type]
        self._observers[registration] = None
        return registration

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
        for observer in tuple(self._observers) if self._observers else ():
            try:
                observer.handler(event, params)  # type: ignore[call-arg,arg-type]
            except Exception:
                self._log.failure("event observer failed for {event}", event=event)
        handlers: list[_Registration] = []
        callid = params.get("callid")
        if isinstance(callid, str):
            handlers.extend(self._by_callid.get((event, callid), ()))
        if event == "E_CALL_TRANSFER":
            transfer_callid = params.get("transfer_callid")
            if isinstance(transfer_callid, str):
                handlers.extend(r for r in self._by_transfer.get(transfer_callid, ()) if r not in handlers)
        if not handlers:
            self.stats["unrouted"] += 1
            self._log.debug("event {event} for Call-ID {callid} has no listener", event=event, callid=callid)
            return
        for registration in handlers:
            if not registration.active:  # cancelled by an earlier handler
                continue
            self.stats["delivered"] += 1
            try:
                registration.handler(params)
            except Exception:
                self._log.failure("event handler failed for {event} {callid}", event=event, callid=callid)


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
        if self.sources is not None and isinstance(addr, tuple) and addr[0] not in self.sources:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, 8th ...: no log flood
                self._log.warn(
                    "dropped an event datagram from {addr}: not from OpenSIPS "
                    "({sources}; see --events-from); {count} so far",
                    addr=addr,
                    sources=sorted(self.sources),
                    count=self.dropped,
                )
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
            self._log.warn(
                "dropped a datagram that is not an EVI event from {addr}: {text!r}",
                addr=addr,
                text=data[:200],
            )
            return
        self._hub.dispatch(message["method"], message["params"])
