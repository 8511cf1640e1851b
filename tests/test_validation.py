"""
L{callapi.validation}: nothing a client sends may add, split or change a
SIP header or an MI parameter (RFC 3261 grammar; values from the traces).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from callapi import validation
from callapi.errors import RPCError

# -- Call-ID ----------------------------------------------------------------------

WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~()<>:\\\"/[]?{}"


def rejected(check: Any, value: Any, name: str = "p") -> str:
    with pytest.raises(RPCError) as caught:
        check(name, value)
    assert (caught.value.code, caught.value.message) == (-32602, "Invalid params")
    assert isinstance(caught.value.data, str) and name in caught.value.data
    return caught.value.data


@pytest.mark.parametrize(
    "value",
    [
        "6c93c431e29d3500",  # baresip (f_hold_unhold)
        "bf2ea3e9-e750-4617-9e98-3e9bc32a78b7",  # Go click-to-dial (UUID)
        "38bb11d20d700119",
        "a@b",
        "no-such-call@x",  # f_hold_unhold
        "1-12345@127.0.0.1",  # sipp style
        "abc!%*_+`'~()<>:\\\"/[]?{}.-xyz@host-1.example.com",
        "x" * 256,
        "a" * 128 + "@" + "b" * 127,
    ],
)
def test_valid_callids(value: str) -> None:
    assert validation.callid("callid", value) == value


@pytest.mark.parametrize(
    "value, data",
    [
        ("", "callid must be a non-empty string (a SIP Call-ID)"),
        (None, "callid must be a non-empty string (a SIP Call-ID)"),
        (12345, "callid must be a non-empty string (a SIP Call-ID)"),
        (["6c93c431e29d3500"], "callid must be a non-empty string (a SIP Call-ID)"),
        ({"callid": "x"}, "callid must be a non-empty string (a SIP Call-ID)"),
        (b"6c93c431e29d3500", "callid must be a non-empty string (a SIP Call-ID)"),
        ("a b", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("a\r\nVia: x", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("abc\n", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("abc\r", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("\tabc", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("a;b", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("a,b", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("a@b@c", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("@b", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("a@", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("é", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("a\x00b", "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
        ("x" * 257, "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"),
    ],
)
def test_invalid_callids(value: Any, data: str) -> None:
    assert rejected(validation.callid, value, "callid") == data


def test_the_parameter_name_is_in_the_message() -> None:
    assert rejected(validation.callid, "a b", "callidA") == (
        "callidA is not a valid SIP Call-ID (RFC 3261 word[@word])"
    )


_FORBIDDEN = re.compile(r"[\s;,]")


@settings(max_examples=500)
@given(
    st.text(alphabet=st.sampled_from(WORD_CHARS + " \t\r\n\x0b\x0c;,@\x00\u00a0\u2028é"), max_size=300)
    | st.text(max_size=50)
)
@example("a\r\nVia: x")
@example("a\u2028b")
@example("a\u00a0b")
def test_no_accepted_callid_contains_separators(value: str) -> None:
    try:
        accepted = validation.callid("callid", value)
    except RPCError:
        return
    assert accepted == value
    assert not _FORBIDDEN.search(value), value
    assert not {"\r", "\n", ";", ",", " ", "\t"} & set(value)
    assert value.isascii() and value.isprintable()
    assert 0 < len(value) <= validation.MAX_CALLID
    assert value.count("@") <= 1


@given(st.text(alphabet=st.sampled_from(WORD_CHARS), min_size=1, max_size=256))
def test_every_word_is_a_callid(value: str) -> None:
    assert validation.callid("callid", value) == value


# -- SIP URI -----------------------------------------------------------------------

BAD_URI = "p is not a valid SIP URI (e.g. sip:alice@example.com)"


@pytest.mark.parametrize(
    "value",
    [
        "sip:alice@127.0.0.1",
        "sips:bob@example.com:5061;transport=tls",
        "sip:127.0.0.1",
        "sip:127.0.0.1:5060",
        "sip:cindy@127.0.0.1",
        "sip:127.0.0.1;lr;did=cfc.8e0edac7",  # Next-hop from t_uac_dlg
        "sip:alice-0x5640@127.0.0.1:5071",  # RURI from t_uac_dlg
        "sip:+4915112345678@example.com;user=phone",
        "sip:alice:secret@example.com",
        "sip:%61lice@example.com",
        "sip:alice@[::1]:5060",
        "sip:alice@example.com.",
        "sip:alice@host:65535",
        "sip:a@b",
    ],
)
def test_valid_sip_uris(value: str) -> None:
    assert validation.sip_uri("p", value) == value


@pytest.mark.parametrize(
    "value, data",
    [
        ("alice", BAD_URI),
        ("alice@example.com", BAD_URI),
        ("tel:+4915112345678", BAD_URI),
        ("http://example.com", BAD_URI),
        ("sip:", BAD_URI),
        ("sip:alice@", BAD_URI),
        ("sip:alice@host?Subject=x", BAD_URI),
        ("sip:alice@host;transport=udp?Call-ID=x", BAD_URI),
        ("<sip:a@b>", BAD_URI),
        ("Alice <sip:a@b>", BAD_URI),
        ("sip:a@b\r\nVia: x", BAD_URI),
        ("sip:a@b\n", BAD_URI),
        ("sip:a b@c", BAD_URI),
        ("sip:a@b>;tag=x", BAD_URI),
        ("sip:a@b,sip:c@d", BAD_URI),
        ("sip:a@-b", BAD_URI),
        ("sip:a@b:5060:5060", BAD_URI),
        ("sip:a@b:123456", BAD_URI),
        ("sip:a@b:99999", "p has a port above 65535"),
        ("sip:a@b:65536", "p has a port above 65535"),
        ("sip:b:70000;transport=tcp", "p has a port above 65535"),
        ("sip:a@exämple.com", BAD_URI),
        ("sip:a@" + "b" * 510, BAD_URI),  # 515 characters
        ("", "p must be a non-empty string (a SIP URI)"),
        (None, "p must be a non-empty string (a SIP URI)"),
        (5060, "p must be a non-empty string (a SIP URI)"),
        (["sip:a@b"], "p must be a non-empty string (a SIP URI)"),
    ],
)
def test_invalid_sip_uris(value: Any, data: str) -> None:
    assert rejected(validation.sip_uri, value) == data


def test_colon_digits_in_a_parameter_value_is_not_a_port() -> None:
    value = "sip:alice@example.com;x=a:70000"
    assert validation.sip_uri("p", value) == value


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_no_accepted_uri_breaks_a_header(value: str) -> None:
    try:
        accepted = validation.sip_uri("p", "sip:" + value)
    except RPCError:
        return
    # "?" and "," may appear in the user part (RFC 3261 user-unreserved),
    # never after the host: no ?headers
    assert not set(accepted) & set(' \t\r\n<>"')
    assert "?" not in accepted.rpartition("@")[2]
    assert accepted.isascii()


# -- leg, cmd_id ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["caller", "callee"])
def test_valid_legs(value: str) -> None:
    assert validation.leg("leg", value) == value


@pytest.mark.parametrize("value", ["both", "Caller", "CALLEE", "", " caller", None, 1, ["caller"], "a"])
def test_invalid_legs(value: Any) -> None:
    assert rejected(validation.leg, value, "legA") == 'legA must be "caller" or "callee"'


@pytest.mark.parametrize("value", ["a", "~" * 128, "550e8400-e29b-41d4-a716-446655440000", "cmd#1!{}"])
def test_valid_cmd_ids(value: str) -> None:
    assert validation.cmd_id(value) == value


@pytest.mark.parametrize("value", ["", " ", "a b", "a\n", "\ta", "x" * 129, "é", "a\x7f", 5, None, ["a"]])
def test_invalid_cmd_ids(value: Any) -> None:
    with pytest.raises(RPCError) as caught:
        validation.cmd_id(value)
    assert (caught.value.code, caught.value.data) == (
        -32602,
        "cmd_id must be a string of 1 to 128 printable ASCII characters without spaces",
    )


def test_any_value() -> None:
    marker = object()
    assert validation.any_value("x", marker) is marker


# -- check_params ---------------------------------------------------------------------


def test_check_params_returns_checked_values() -> None:
    assert validation.check_params(
        {"callid": "a@b", "leg": "callee", "destination": "sip:c@d"},
        {"callid": validation.callid, "leg": validation.leg},
        {"destination": validation.sip_uri, "headers": validation.any_value},
    ) == {"callid": "a@b", "leg": "callee", "destination": "sip:c@d"}


def test_check_params_missing() -> None:
    with pytest.raises(RPCError) as caught:
        validation.check_params({"leg": "caller"}, {"callid": validation.callid, "leg": validation.leg})
    assert (caught.value.code, caught.value.data) == (-32602, "missing parameter callid")


def test_check_params_unknown_sorted() -> None:
    with pytest.raises(RPCError) as caught:
        validation.check_params({"callid": "a", "zeta": 1, "alpha": 2}, {"callid": validation.callid})
    assert (caught.value.code, caught.value.data) == (-32602, "unknown parameter alpha, zeta")


def test_check_params_optional_none_is_absent_and_others_are_checked() -> None:
    assert validation.check_params(
        {"callid": "a", "destination": None},
        {"callid": validation.callid},
        {"destination": validation.sip_uri},
    ) == {"callid": "a"}
    with pytest.raises(RPCError) as caught:
        validation.check_params(
            {"callid": "a", "destination": "x"},
            {"callid": validation.callid},
            {"destination": validation.sip_uri},
        )
    assert caught.value.data == "destination is not a valid SIP URI (e.g. sip:alice@example.com)"


def test_check_params_allow_unknown() -> None:
    assert validation.check_params(
        {"x": 1, "callid": "a"}, {"callid": validation.callid}, allow_unknown=True
    ) == {"callid": "a"}


def test_check_params_bad_value_reported_before_unknown() -> None:
    with pytest.raises(RPCError) as caught:
        validation.check_params({"callid": "a b", "zz": 1}, {"callid": validation.callid})
    assert caught.value.data == "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"


def test_scheme_is_case_insensitive_and_ipv4_octets_bounded() -> None:
    """
    RFC 3261 section 19.1.4: schemes compare case-insensitively; an IPv4
    host has octets 0-255.
    """
    from callapi.errors import RPCError
    from callapi.validation import sip_uri

    assert sip_uri("p", "SIP:alice@127.0.0.1") == "SIP:alice@127.0.0.1"
    with pytest.raises(RPCError):
        sip_uri("p", "sip:x@999.999.999.999")


def test_question_mark_in_user_part_is_refused() -> None:
    """
    RFC 3261 allows "?" in the user part, but nothing a client sends may
    look like ?headers to any parser on the way.
    """
    from callapi.errors import RPCError
    from callapi.validation import sip_uri

    with pytest.raises(RPCError):
        sip_uri("p", "sip:bob?Subject=x@127.0.0.1")
