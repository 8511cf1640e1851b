"""
Checks on client-supplied command parameters.

Nothing a client sends may add, split or change a SIP header, an MI
parameter or a dialog value, so every value that reaches OpenSIPS is checked
against the RFC 3261 grammar of what it stands for.  Each checker returns
the (possibly normalised) value or raises L{callapi.errors.RPCError}
-32602 naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from callapi.errors import RPCError, invalid_params

Checker = Callable[[str, Any], Any]

#: RFC 3261 section 25.1 C{word} characters (Call-ID = word ["@" word]).
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALLID = re.compile(rf"{_WORD}(?:@{_WORD})?")
#: Longest Call-ID accepted; real ones are < 100 characters.
MAX_CALLID = 256

# RFC 3261 section 25.1 SIP-URI, without the display name or angle brackets:
# "sip:" / "sips:" [ userinfo "@" ] hostport uri-parameters [ headers ].
# Headers (?...) are refused: they could inject SIP headers into requests.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
# RFC 3261 also allows "?" in the user part; refused here (a parser that
# splits at "?" first would read headers), as are ?headers after the host.
_USER = rf"(?:[{_UNRESERVED}&=+$,;/]|{_ESCAPED})+"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*"
_HOSTNAME = r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
_IPV6 = r"\[[0-9A-Fa-f:.]+\]"
_HOST = rf"(?:{_HOSTNAME}|{_IPV4}|{_IPV6})"
_PARAM_CHARS = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+"
_PARAMS = rf"(?:;{_PARAM_CHARS}(?:={_PARAM_CHARS})?)*"
_SIP_URI = re.compile(
    rf"(?i:sips?):(?:{_USER}(?::{_PASSWORD})?@)?{_HOST}(?::(?P<port>\d{{1,5}}))?{_PARAMS}", re.ASCII
)
MAX_URI = 512

LEGS = ("caller", "callee")
MAX_CMD_ID = 128
_CMD_ID = re.compile(r"[\x21-\x7e]+")


def callid(name: str, value: Any) -> str:
    """
    A SIP Call-ID: RFC 3261 C{word ["@" word]}, at most L{MAX_CALLID}
    characters (no spaces, CR, LF or other separators).
    """
    if not isinstance(value, str) or not value:
        raise invalid_params(f"{name} must be a non-empty string (a SIP Call-ID)")
    if len(value) > MAX_CALLID or not _CALLID.fullmatch(value):
        raise invalid_params(f"{name} is not a valid SIP Call-ID (RFC 3261 word[@word])")
    return value


def sip_uri(name: str, value: Any) -> str:
    """
    A SIP or SIPS URI (RFC 3261 section 19.1), without display name, angle
    brackets or C{?headers}; at most L{MAX_URI} characters.
    """
    if not isinstance(value, str) or not value:
        raise invalid_params(f"{name} must be a non-empty string (a SIP URI)")
    match = _SIP_URI.fullmatch(value) if len(value) <= MAX_URI else None
    if match is None:
        raise invalid_params(f"{name} is not a valid SIP URI (e.g. sip:alice@example.com)")
    port = match.group("port")
    if port is not None and int(port) > 65535:
        raise invalid_params(f"{name} has a port above 65535")
    return value


def uri_key(uri: str) -> tuple[str, str, str, str]:
    """
    What makes two SIP URIs (already checked by L{sip_uri}) the same
    address for L{same_address}: the scheme and host case-insensitively,
    the user part as is, the port with its default (5060 for C{sip:}, 5061
    for C{sips:}); password and C{;uri-parameters} are ignored (RFC 3261
    section 19.1.4 compares parameters too; a phone is the same phone with
    C{;transport=udp} or without).

    @return: C{(scheme, user, host, port)}.
    """
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        hostport = rest
    user = userinfo.split(":", 1)[0]
    hostport = hostport.split(";", 1)[0]
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    return scheme, user, host.lower().rstrip("."), port or ("5061" if scheme == "sips" else "5060")


def same_address(a: str, b: str) -> bool:
    """
    C{True} when the SIP URIs C{a} and C{b} name the same address
    (L{uri_key}).
    """
    return uri_key(a) == uri_key(b)


def leg(name: str, value: Any) -> str:
    """
    A dialog leg: C{"caller"} or C{"callee"} (not C{"both"}, which callops
    rejects with -32602, trace C{d_blind_transfer_errors}).
    """
    if value not in LEGS:
        raise invalid_params(f'{name} must be "caller" or "callee"')
    return value


def any_value(name: str, value: Any) -> Any:
    """
    Accept anything (Echo).
    """
    return value


def cmd_id(value: Any) -> str:
    """
    The optional client-chosen command id: 1 to 128 printable ASCII
    characters without spaces.
    """
    if not isinstance(value, str) or not _CMD_ID.fullmatch(value) or len(value) > MAX_CMD_ID:
        raise invalid_params(
            f"cmd_id must be a string of 1 to {MAX_CMD_ID} printable ASCII characters without spaces"
        )
    return value


def check_params(
    params: dict[str, Any],
    required: dict[str, Checker],
    optional: dict[str, Checker] | None = None,
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """
    Validate a command's C{params} (C{cmd_id} excluded by the caller).

    @return: the checked values, by name.
    @raise RPCError: -32602 for a missing, ill-typed or unknown parameter.
    """
    optional = optional or {}
    checked: dict[str, Any] = {}
    for name, check in required.items():
        if name not in params:
            raise invalid_params(f"missing parameter {name}")
        checked[name] = check(name, params[name])
    for name, check in optional.items():
        if name in params and params[name] is not None:
            checked[name] = check(name, params[name])
    if not allow_unknown:
        unknown = sorted(set(params) - set(required) - set(optional))
        if unknown:
            raise invalid_params("unknown parameter " + ", ".join(unknown))
    return checked


__all__ = [
    "RPCError",
    "any_value",
    "callid",
    "check_params",
    "cmd_id",
    "leg",
    "same_address",
    "sip_uri",
    "uri_key",
]
