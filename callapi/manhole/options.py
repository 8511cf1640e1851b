"""
Validating the manhole options (C{--manhole}, C{--manhole-keys},
C{--manhole-key-dir}, C{--manhole-allow-remote}): the endpoint must bind
loopback unless remote access is allowed, and the keys file must hold a
public key.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from callapi.logging import logger
from callapi.manhole.keys import read_authorized_keys

_INSTALL_HINT = "pip install 'callapi[manhole]'"

_log = logger("callapi.manhole")


def require_conch() -> None:
    """
    @raise usage.UsageError: the C{callapi[manhole]} extra is not installed.
    """
    try:
        import cryptography  # noqa: F401
        import twisted.conch.manhole_ssh
        import twisted.conch.ssh.keys  # noqa: F401
    except ImportError as e:
        raise usage.UsageError(f"--manhole needs the conch extra: {_INSTALL_HINT} ({e})") from None


def split_endpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split a server endpoint string the way L{serverFromString} does
    (C{:} separates fields, C{\\} escapes the next character).

    @return: (lower-cased endpoint type, positional fields, keyword fields).
    """
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for field in fields[1:]:
        name, equals, value = field.partition("=")
        if equals:
            kwargs[name] = value
        else:
            args.append(field)
    return fields[0].lower(), args, kwargs


def is_loopback(host: str) -> bool:
    """
    Whether C{host}, an IP address literal, is a loopback address
    (127.0.0.0/8, C{::1}, or 127/8 mapped into IPv6).  Names and unparsable
    text are not loopback.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_endpoint(options: Mapping[str, Any]) -> str:
    """
    Validate C{options["manhole"]}.

    @return: the endpoint string, with C{interface=localhost} rewritten to
        the loopback address.
    @raise usage.UsageError: not an endpoint we can listen on, or not bound
        to loopback while remote access is not allowed.
    """
    description = str(options["manhole"])
    allow_remote = bool(options.get("manhole-allow-remote"))
    kind, args, kwargs = split_endpoint(description)
    if kind in ("tcp", "tcp6", "ssl"):
        port = args[0] if args else kwargs.get("port")
        try:
            if port is None or not 0 <= int(port) <= 65535:
                raise ValueError(port)
        except ValueError:
            raise usage.UsageError(
                f"--manhole {description!r}: needs a port number, e.g. tcp:2222:interface=127.0.0.1"
            ) from None
        interface = kwargs.get("interface")
        if interface == "localhost":
            loopback = "\\:\\:1" if kind == "tcp6" else "127.0.0.1"
            description = description.replace("interface=localhost", f"interface={loopback}")
            interface = "::1" if kind == "tcp6" else "127.0.0.1"
        if allow_remote:
            return description
        if interface is None:
            raise usage.UsageError(
                f"--manhole {description!r} binds every address; add interface=127.0.0.1 "
                "(or pass --manhole-allow-remote)"
            )
        if not is_loopback(interface):
            raise usage.UsageError(
                f"--manhole {description!r} binds {interface}, not a loopback address "
                "(pass --manhole-allow-remote to allow it)"
            )
        return description
    if kind == "unix":
        if not (args or kwargs.get("address")):
            raise usage.UsageError(f"--manhole {description!r}: needs a socket path")
        return description  # not reachable from the network
    if allow_remote:
        return description
    raise usage.UsageError(
        f"--manhole {description!r}: cannot tell whether a {kind!r} endpoint binds only "
        "loopback; use tcp:PORT:interface=127.0.0.1 (or pass --manhole-allow-remote)"
    )


def check_manhole_options(options: Mapping[str, Any]) -> None:
    """
    Validate the manhole options; called from C{Options.resolve()} when
    C{--manhole} is set.

    @param options: the C{Options} (any mutable mapping) with the keys
        C{manhole} (server endpoint string), C{manhole-keys} (path of an
        C{authorized_keys} file), C{manhole-key-dir} (path or C{None}) and
        C{manhole-allow-remote} (bool).  C{options["manhole"]} may be
        rewritten (C{interface=localhost} becomes the loopback address).
    @raise usage.UsageError: one line: the conch extra is missing; the
        endpoint is not loopback and remote access is not allowed; the keys
        file is missing, unreadable or holds no public key; the key directory
        is not a directory.
    """
    require_conch()
    description = check_endpoint(options)
    if description != options["manhole"]:
        options["manhole"] = description  # type: ignore[index]
    keys_file = options.get("manhole-keys")
    if not keys_file:
        raise usage.UsageError(
            "--manhole needs --manhole-keys, an authorized_keys file (there are no passwords)"
        )
    try:
        found, bad = read_authorized_keys(str(keys_file))
    except OSError as e:
        raise usage.UsageError(f"--manhole-keys {keys_file}: {e.strerror or e}") from None
    if not found:
        raise usage.UsageError(f"--manhole-keys {keys_file}: holds no parsable public key")
    if bad:
        _log.warn(
            "manhole: ignoring lines {lines} of {keys_file}: not a public key", lines=bad, keys_file=keys_file
        )
    key_dir = options.get("manhole-key-dir")
    if key_dir and os.path.exists(key_dir) and not os.path.isdir(key_dir):
        raise usage.UsageError(f"--manhole-key-dir {key_dir}: not a directory")
