"""
The OpenSIPS side of the daemon as one service: the MI socket, the EVI event
socket and the event subscriptions, started and stopped in the right order
(unsubscribe while the MI socket still works).

Address forms (docs/configuration.md, "Addresses"):
  - MI: C{udp:HOST:PORT} (or the Go tool's bare C{HOST:PORT}) or
    C{unix:/path/to/socket} (mi_datagram's unix datagram socket).
  - Events: C{udp:IP:PORT} (C{PORT} may be 0), C{unix:/path}, or C{None}
    for an ephemeral UDP port on the local address used to reach MI; what
    OpenSIPS is told in C{event_subscribe} is C{udp:IP:PORT} /
    C{unix:/path} (trace C{h_errors}: C{tcp:} is refused).
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed

from callapi.logging import logger
from callapi.opensips.addresses import (
    local_address_towards,
    parse_address,
    resolve_ipv4,
)
from callapi.opensips.events import EventHub, EventReceiverProtocol
from callapi.opensips.liveness import ProxyStatus
from callapi.opensips.mi import MAX_DATAGRAM, MIClientProtocol
from callapi.opensips.names import MINames
from callapi.opensips.registry import DialogRegistry
from callapi.opensips.subscriptions import SubscriptionManager, detect_names

_module_log = logger("callapi.opensips.service")

#: Receive buffer asked for the MI and event sockets, in bytes: a burst of
#: commands brings 4+ events each, and the default (~208 KiB) overflows.
RECEIVE_BUFFER = 4 << 20


def enlarge_receive_buffer(port: Any, what: str, size: int = RECEIVE_BUFFER) -> int:
    """
    Ask the kernel for a C{size}-byte receive buffer on a datagram port.

    @return: the size granted (Linux caps it at C{net.core.rmem_max} and
        reports twice the value); a warning is logged when it is smaller.
    """
    try:
        handle = port.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        granted = handle.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except (AttributeError, OSError) as e:
        _module_log.warn("cannot size the {what} socket's receive buffer: {error}", what=what, error=str(e))
        return 0
    if granted < size:
        _module_log.warn(
            "the {what} socket's receive buffer is {granted} bytes (asked {size}); "
            "raise net.core.rmem_max to avoid dropped datagrams under load",
            what=what,
            granted=granted,
            size=size,
        )
    return granted


class OpenSIPSService(Service):
    """
    Owns the MI client socket, the event socket and the subscriptions.

    @ivar mi: the L{MIClientProtocol} (usable once started).
    @ivar hub: the L{EventHub} commands listen on.
    @ivar subscriptions: the L{SubscriptionManager} (once started).
    @ivar event_socket: the C{udp:IP:PORT} / C{unix:/path} given to OpenSIPS.
    @ivar subscribed: fires once the first round of C{event_subscribe}
        requests was answered (successfully or not; see
        C{subscriptions.status}).
    @ivar registry: the L{DialogRegistry} (loaded at start and whenever
        OpenSIPS comes back or restarted).
    @ivar status: the L{ProxyStatus} (liveness probe).
    """

    _log = logger()

    def __init__(
        self,
        reactor: Any,
        mi_address: str,
        events_address: str | None = None,
        *,
        mi_timeout: float,
        event_expire: int,
        names: MINames | None = None,
        events_from: tuple[str, ...] = (),
        mi_retries: int,
        probe_interval: float,
        probe_interval_down: float,
        probe_timeout: float,
        registry_sweep: float,
        registry_linger: float,
        registry_cap: int,
    ) -> None:
        """
        @param mi_address: OpenSIPS' mi_datagram socket (module docstring).
        @param events_address: the event socket to bind, or C{None}.
        @param mi_timeout: seconds to wait for each MI reply.
        @param event_expire: C{event_subscribe} expire, seconds.
        @param names: the MI names to use and update from C{which}.
        @param events_from: extra IPs events may come from (C{--events-from}).
        @param mi_retries: re-sends of idempotent MI requests (L{MIClientProtocol}).
        @param probe_interval: seconds between C{uptime} probes while
            reachable; C{probe_interval_down} while not; C{probe_timeout}
            each probe's wait (L{ProxyStatus}).
        @param registry_sweep: seconds between full C{dlg_list} sweeps;
            C{registry_linger}: seconds ended dialogs stay; C{registry_cap}:
            most dialogs held (L{DialogRegistry}).
        @raise AddressError: for an address that cannot be parsed.
        """
        self._reactor = reactor
        self.mi_address = parse_address(mi_address, "MI address")
        self.events_address = (
            parse_address(events_address, "events address", allow_port_zero=True) if events_address else None
        )
        self.mi = MIClientProtocol(
            reactor,
            None,
            mi_timeout,
            first_id=random.SystemRandom().randrange(1, 1 << 31),
            retries=mi_retries,
        )
        self.hub = EventHub()
        self.receiver = EventReceiverProtocol(self.hub)
        #: extra IPs events may come from (C{--events-from}); "any" = no check
        self.events_from = events_from
        self.event_expire = event_expire

        #: MI command names, updated from the proxy's C{which} at start
        self.names = names if names is not None else MINames()
        self.subscriptions: SubscriptionManager | None = None
        self.event_socket = ""
        self._ports: list[Any] = []
        self._tempdir: str | None = None
        #: fires once the first round of event_subscribe answers came
        self.subscribed: Deferred[None] = Deferred()
        self.registry = DialogRegistry(
            reactor,
            self.mi,
            self.names,
            linger=registry_linger,
            cap=registry_cap,
            sweep_interval=registry_sweep,
        )
        self.hub.observe(self.registry.on_event)
        self.status = ProxyStatus(
            reactor,
            self.mi,
            self.names,
            interval=probe_interval,
            interval_down=probe_interval_down,
            timeout=probe_timeout,
        )
        self.mi.reply_observers.append(self.status.saw_reply)
        self.status.subscribed_fn = lambda: self.subscriptions is not None and self.subscriptions.subscribed
        self.status.watch(self._proxy_changed)

    def _proxy_changed(self, change: str) -> None:
        """
        OpenSIPS came back or restarted: re-learn the MI names, re-subscribe
        at once and reload the dialog registry.
        """
        if change not in ("reachable", "restarted") or not self.running:
            return
        self._log.info("OpenSIPS is {change}: re-learning MI names, re-subscribing", change=change)

        def after_names(_: Any) -> None:
            if self.subscriptions is not None:
                self.subscriptions.resubscribe_now()
            self.registry.sweep()

        detect_names(self.mi, self.names).addCallback(after_names)

    def startService(self) -> None:
        """
        Open both sockets and subscribe (asynchronously).

        @raise AddressError: an address does not resolve.
        @raise twisted.internet.error.CannotListenError: a socket cannot be bound.
        """
        super().startService()
        reactor = self._reactor
        mi = self.mi_address
        if mi.kind == "udp":
            mi_ip = resolve_ipv4(mi.host, "MI address")
            # not connect()ed: on a connected UDP socket an ICMP "port
            # unreachable" (OpenSIPS down) makes the reactor drop the socket
            # for good; the MI client filters replies by source instead.
            self.mi.peer = (mi_ip, mi.port)
            port = reactor.listenUDP(
                0, self.mi, interface=local_address_towards(mi_ip), maxPacketSize=MAX_DATAGRAM
            )
            self._ports.append(port)
            enlarge_receive_buffer(port, "MI")
        else:
            mi_ip = "127.0.0.1"
            # mi_datagram answers to the sender's bound path: bind one in a
            # private directory that OpenSIPS (maybe another user) can reach.
            self._tempdir = tempfile.mkdtemp(prefix="callapi-")
            os.chmod(self._tempdir, 0o711)
            bind = os.path.join(self._tempdir, "mi-reply.sock")
            self.mi.peer = mi.path
            port = reactor.listenUNIXDatagram(bind, self.mi, maxPacketSize=MAX_DATAGRAM, mode=0o666)
            self._ports.append(port)
            enlarge_receive_buffer(port, "MI")
        if "any" in self.events_from:
            self.receiver.sources = None
        else:
            sources = {resolve_ipv4(h, "--events-from") for h in self.events_from}
            if mi.kind == "udp":
                sources.add(mi_ip)
            else:
                sources.update({"127.0.0.1"})
            self.receiver.sources = sources
        events = self.events_address
        if events is None or events.kind == "udp":
            if events is None:
                ip = local_address_towards(mi_ip) if mi.kind == "udp" else "127.0.0.1"
                port_number = 0
            else:
                ip = resolve_ipv4(events.host, "events address")
                port_number = events.port
            port = reactor.listenUDP(port_number, self.receiver, interface=ip, maxPacketSize=MAX_DATAGRAM)
            self._ports.append(port)
            enlarge_receive_buffer(port, "event")
            self.event_socket = f"udp:{ip}:{port.getHost().port}"
        else:
            if os.path.exists(events.path):
                os.unlink(events.path)
            port = reactor.listenUNIXDatagram(events.path, self.receiver, maxPacketSize=MAX_DATAGRAM)
            self._ports.append(port)
            enlarge_receive_buffer(port, "event")
            self.event_socket = f"unix:{events.path}"
        self._log.info(
            "MI requests go to {mi}; events are received on {events}", mi=str(mi), events=self.event_socket
        )
        self.subscriptions = SubscriptionManager(
            reactor, self.mi, self.event_socket, expire=self.event_expire, names=self.names
        )
        self.subscriptions.start().chainDeferred(self.subscribed)
        self.subscribed.addCallback(lambda _: self.registry.start())
        self.status.start()

    def stopService(self) -> Deferred[None]:
        """
        Unsubscribe (waiting at most 2 s for OpenSIPS), then close the sockets.
        """
        super().stopService()
        self.status.stop()
        self.registry.stop()
        if self.subscriptions is not None:
            d = self.subscriptions.stop()
        else:
            d = succeed(None)

        def close(_: Any) -> Deferred[Any]:
            ports, self._ports = self._ports, []
            stops = [maybeDeferred(p.stopListening) for p in ports]
            if self._tempdir:
                for name in os.listdir(self._tempdir):
                    os.unlink(os.path.join(self._tempdir, name))
                os.rmdir(self._tempdir)
                self._tempdir = None
            return DeferredList(stops, consumeErrors=True)

        return d.addCallback(close).addCallback(lambda _: None)
