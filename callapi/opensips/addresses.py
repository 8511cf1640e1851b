"""
MI and event socket addresses (docs/protocol.md, "Addresses"):
C{udp:HOST:PORT} (or the Go tool's bare C{HOST:PORT}) and C{unix:/path}.
"""

from __future__ import annotations

import re
import socket

import attrs


class AddressError(ValueError):
    """
    An MI or event address that cannot be parsed or resolved.
    """


@attrs.frozen
class DatagramAddress:
    """
    C{kind} is C{"udp"} (C{host}, C{port}) or C{"unix"} (C{path}).
    """

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"udp:{self.host}:{self.port}"


def parse_address(text: str, what: str = "address", allow_port_zero: bool = False) -> DatagramAddress:
    """
    Parse C{udp:HOST:PORT}, C{HOST:PORT} or C{unix:/path}.

    @raise AddressError: with a one-line explanation.
    """
    if not isinstance(text, str) or not text.strip():
        raise AddressError(f"{what}: empty address")
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise AddressError(f"{what}: unix socket path must be absolute: {text!r}")
        return DatagramAddress("unix", path=path)
    if text.startswith("udp:"):
        text = text[4:]
    elif not re.fullmatch(r"[A-Za-z0-9.\-]+:\d+|\[[0-9A-Fa-f:.]+\]:\d+", text):
        raise AddressError(f"{what}: expected udp:HOST:PORT or unix:/path, got {text!r}")
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise AddressError(f"{what}: expected udp:HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535 or (port == 0 and not allow_port_zero):
        raise AddressError(f"{what}: invalid port {port}")
    return DatagramAddress("udp", host=host, port=port)


def resolve_ipv4(host: str, what: str) -> str:
    """
    Resolve C{host} to an IPv4 address (blocking; used once at start-up).

    @raise AddressError: when it does not resolve.
    """
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        raise AddressError(f"{what}: cannot resolve {host!r}: {e}") from None


def local_address_towards(ip: str) -> str:
    """
    The local IPv4 address the kernel would use to reach C{ip} (no packet is
    sent: connecting a UDP socket only picks a route).
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((ip, 9))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()
