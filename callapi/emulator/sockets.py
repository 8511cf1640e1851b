"""
The emulator on real sockets: the MI datagram protocol (a thin shell that
hands each datagram to L{OpenSIPSEmulator.handle_datagram}), the event
sender (UDP and unix datagram subscribers), L{start_emulator} and the
L{RunningEmulator} handle it returns.

Follows C{3.4/README.md} "MI datagram transport" (replies go to the
request's source address) and "Events in general" (event_datagram sends
from sockets of its own), under C{../shared/opensips-traces}.
"""

from __future__ import annotations

import socket as _socket
from collections.abc import Mapping
from typing import Any

import attr
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.protocol import DatagramProtocol

from callapi.emulator.core import OpenSIPSEmulator
from callapi.emulator.faults import Faults
from callapi.emulator.sip import Phone, default_phones
from callapi.logging import logger

__all__ = ["EMULATOR_BANNER", "EventSender", "MIProtocol", "RunningEmulator", "start_emulator"]

#: What the emulator says when it starts (log line, standalone banner);
#: C{{version}} is the imitated OpenSIPS version.
EMULATOR_BANNER = (
    "OpenSIPS EMULATOR (callapi.emulator) - this is NOT a real "
    "OpenSIPS; it imitates OpenSIPS {version} from recorded traces"
)


class MIProtocol(DatagramProtocol):
    """Thin shell: each datagram goes to the emulator, replies go back to
    the request's source address (3.4/README.md "MI datagram transport")."""

    _log = logger()

    def __init__(self, emulator: OpenSIPSEmulator) -> None:
        self.emulator = emulator

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        def reply(data: bytes) -> None:
            transport = self.transport
            if transport is None:
                return
            try:
                transport.write(data, addr)
            except OSError as e:
                self._log.warn("MI: cannot answer {addr}: {error}", addr=addr, error=str(e))

        self.emulator.handle_datagram(datagram, reply)


class EventSender(DatagramProtocol):
    """The emulator's own event socket (event_datagram sends from its own
    sockets, 3.4/README.md "Events in general")."""

    _log = logger()

    def __init__(self) -> None:
        self._unix: Any = None

    def send(self, socket: str, datagram: bytes) -> None:
        """Send one event datagram to C{udp:host:port} or C{unix:/path};
        a failure is logged, never raised."""
        try:
            if socket.startswith("udp:"):
                host, _, port = socket[4:].rpartition(":")
                if self.transport is not None:
                    self.transport.write(datagram, (host, int(port)))
            elif socket.startswith("unix:"):
                self._send_unix(socket[5:], datagram)
        except Exception as e:  # OSError, or InvalidAddressError for a host name
            self._log.warn("EVI: cannot send to {socket}: {error}", socket=socket, error=str(e))

    def _send_unix(self, path: str, datagram: bytes) -> None:
        if self._unix is None:
            self._unix = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            self._unix.setblocking(False)
        self._unix.sendto(datagram, path)

    def close_unix(self) -> None:
        """Close the unix datagram socket, if one was opened."""
        if self._unix is not None:
            self._unix.close()
            self._unix = None


@attr.s(auto_attribs=True, eq=False)
class RunningEmulator:
    """What L{start_emulator} returns."""

    emulator: OpenSIPSEmulator
    mi_address: tuple[str, int]
    _ports: list[Any]
    _sender: EventSender

    def stop(self) -> Deferred[None]:
        """Cancel the emulator's timers and close its sockets."""
        self.emulator.stop()
        self._sender.close_unix()
        ds = [maybeDeferred(p.stopListening) for p in self._ports]
        return gatherResults(ds).addCallback(lambda _: None)


def start_emulator(
    reactor: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    version: str = "3.4",
    delay_scale: float = 1.0,
    *,
    phones: Mapping[str, Phone] | None = None,
    pass_provisional_replies: bool = False,
    seed: int | None = None,
    faults: Faults | None = None,
) -> RunningEmulator:
    """
    Listen for MI datagrams on C{host:port} (UDP, 0 = any free port) and send
    events from a socket of its own.  Synchronous.

    @param phones: the reachable users; default: the harness phones
        (L{default_phones}).
    @param faults: faults to inject (L{Faults}); default none.
    """
    sender = EventSender()
    emulator = OpenSIPSEmulator(
        reactor,
        sender.send,
        version=version,
        delay_scale=delay_scale,
        pass_provisional_replies=pass_provisional_replies,
        seed=seed,
        faults=faults,
    )
    for uri, phone in (default_phones() if phones is None else phones).items():
        emulator.add_phone(uri, phone)
    mi_port = reactor.listenUDP(port, MIProtocol(emulator), interface=host, maxPacketSize=65535)
    # a burst of MI requests must not overflow the default ~208 KiB buffer
    # (a real mi_datagram socket needs the same: docs/opensips.md)
    try:
        mi_port.getHandle().setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    event_port = reactor.listenUDP(0, sender, interface=host, maxPacketSize=65535)
    address = mi_port.getHost()
    logger("callapi.emulator").info(
        EMULATOR_BANNER + " - MI on udp:{host}:{port}", version=version, host=address.host, port=address.port
    )
    return RunningEmulator(emulator, (address.host, address.port), [mi_port, event_port], sender)
