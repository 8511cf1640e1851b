"""
L{callapi.opensips.mi.MIClientProtocol}: the OpenSIPS MI client over a datagram
socket (3.4 README, "MI datagram transport"), driven with a L{Clock} and
L{FakeDatagramTransport}: exact request datagrams, reply matching,
errors, timeouts, junk, provisional replies, cancellation and stop.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from zope.interface.verify import verifyObject

from callapi.errors import MIError, MITimeout, MIUnavailable
from callapi.interfaces import IMIClient
from callapi.opensips.mi import (
    IDEMPOTENT,
    MAX_DATAGRAM,
    MIClientProtocol,
    MITimeoutAfterText,
    encode_request,
    is_provisional,
)
from callapi.testing.fakes import FakeMIClient, error_of, failure_of, no_result, result_of

PEER = ("127.0.0.1", 8080)
CALLID = "6c93c431e29d3500"


@pytest.fixture
def transport() -> FakeDatagramTransport:
    return FakeDatagramTransport()


@pytest.fixture
def client(clock: Clock, transport: FakeDatagramTransport) -> MIClientProtocol:
    client = MIClientProtocol(clock, PEER, timeout=5)
    client.makeConnection(transport)
    return client


def answer(client: MIClientProtocol, message: Any) -> None:
    """
    Deliver one reply datagram (a JSON value, or raw bytes) from OpenSIPS.
    """
    data = message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":")).encode()
    client.datagramReceived(data, PEER)


def test_interfaces(client: MIClientProtocol) -> None:
    assert verifyObject(IMIClient, client)
    assert verifyObject(IMIClient, FakeMIClient())


# -- requests -----------------------------------------------------------------


def test_request_datagram_bytes(client: MIClientProtocol, transport: FakeDatagramTransport) -> None:
    client.call("call_hold", {"callid": CALLID})
    client.call("which")
    client.call("event_subscribe", {"event": "E_CALL_HOLD", "socket": "udp:127.0.0.1:9921", "expire": 120})
    assert transport.written == [
        (b'{"jsonrpc":"2.0","method":"call_hold","id":1,"params":{"callid":"6c93c431e29d3500"}}', PEER),
        (b'{"jsonrpc":"2.0","method":"which","id":2}', PEER),
        (
            b'{"jsonrpc":"2.0","method":"event_subscribe","id":3,"params":'
            b'{"event":"E_CALL_HOLD","socket":"udp:127.0.0.1:9921","expire":120}}',
            PEER,
        ),
    ]
    assert {k: (v.method, v.params) for k, v in client.pending.items()} == {
        "1": ("call_hold", {"callid": CALLID}),
        "2": ("which", None),
        "3": ("event_subscribe", {"event": "E_CALL_HOLD", "socket": "udp:127.0.0.1:9921", "expire": 120}),
    }
    assert client.stats["sent"] == 3


def test_request_is_ascii_json(client: MIClientProtocol, transport: FakeDatagramTransport) -> None:
    client.call("t_uac_dlg", {"headers": "From: <sip:é@x>\r\nTo: <sip:b@x>\r\n"})
    datagram, _ = transport.written[0]
    datagram.decode("ascii")
    assert json.loads(datagram)["params"]["headers"] == "From: <sip:é@x>\r\nTo: <sip:b@x>\r\n"


def test_connected_socket_writes_without_address(clock: Clock, transport: FakeDatagramTransport) -> None:
    client = MIClientProtocol(clock, None, timeout=5)
    client.makeConnection(transport)
    client.call("version")
    assert transport.written == [
        (b'{"jsonrpc":"2.0","method":"version","id":1}', FakeDatagramTransport.noAddr)
    ]


@pytest.mark.parametrize("method", ["", None, 5, b"which", ["which"]])
def test_encode_request_refuses_a_bad_method(method: Any) -> None:
    with pytest.raises(ValueError, match="MI method must be a non-empty string"):
        encode_request(1, method, None)


def test_encode_request() -> None:
    assert encode_request(7, "dlg_end_dlg", {"dialog_id": CALLID}) == (
        b'{"jsonrpc":"2.0","method":"dlg_end_dlg","id":7,"params":{"dialog_id":"6c93c431e29d3500"}}'
    )
    assert encode_request(8, "dlg_list", {}) == (b'{"jsonrpc":"2.0","method":"dlg_list","id":8,"params":{}}')


@pytest.mark.parametrize("method", ["", None])
def test_call_with_a_bad_method_sends_nothing(
    client: MIClientProtocol, clock: Clock, transport: FakeDatagramTransport, method: Any
) -> None:
    with pytest.raises(ValueError):
        client.call(method)
    assert transport.written == [] and client.pending == {} and clock.getDelayedCalls() == []


# -- replies ------------------------------------------------------------------


def test_reply_matched_by_numeric_id(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("call_hold", {"callid": CALLID})
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 1})
    assert result_of(d) == "OK"
    assert client.pending == {} and clock.getDelayedCalls() == []
    assert client.stats["replies"] == 1


def test_reply_matched_by_string_id(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("which")
    answer(client, b'{"jsonrpc":"2.0","result":["which","version"],"id":"1"}')
    assert result_of(d) == ["which", "version"]
    assert client.pending == {} and clock.getDelayedCalls() == []


def test_replies_in_any_order(client: MIClientProtocol) -> None:
    d1 = client.call("call_hold", {"callid": "a"})
    d2 = client.call("call_hold", {"callid": "b"})
    answer(client, {"jsonrpc": "2.0", "result": "second", "id": 2})
    no_result(d1)
    assert result_of(d2) == "second"
    answer(client, {"jsonrpc": "2.0", "result": "first", "id": 1})
    assert result_of(d1) == "first"


@pytest.mark.parametrize("result", ["OK", None, 0, [], {"Dialogs": []}])
def test_any_json_result(client: MIClientProtocol, result: Any) -> None:
    d = client.call("x")
    answer(client, {"jsonrpc": "2.0", "result": result, "id": 1})
    assert result_of(d) == result


@pytest.mark.parametrize(
    "error, code, message, data, text",
    [
        ({"code": 404, "message": "Dialog not found"}, 404, "Dialog not found", None, "404 Dialog not found"),
        ({"code": 410, "message": "Dialog not ready"}, 410, "Dialog not ready", None, "410 Dialog not ready"),
        (
            {"code": 480, "message": "Both dialog legs are on hold"},
            480,
            "Both dialog legs are on hold",
            None,
            "480 Both dialog legs are on hold",
        ),
        (
            {"code": -32602, "message": "Invalid params", "data": "Too few or too many parameters"},
            -32602,
            "Invalid params",
            "Too few or too many parameters",
            "-32602 Invalid params (Too few or too many parameters)",
        ),
        (
            {"code": -32601, "message": "Method not found"},
            -32601,
            "Method not found",
            None,
            "-32601 Method not found",
        ),
    ],
)
def test_error_reply(
    client: MIClientProtocol,
    clock: Clock,
    error: dict[str, Any],
    code: int,
    message: str,
    data: Any,
    text: str,
) -> None:
    d = client.call("call_hold", {"callid": CALLID})
    answer(client, {"jsonrpc": "2.0", "error": error, "id": 1})
    reason = error_of(d, MIError)
    assert (reason.method, reason.code, reason.message, reason.data) == ("call_hold", code, message, data)
    assert str(reason) == text
    assert client.pending == {} and clock.getDelayedCalls() == []


def test_malformed_error_reply_still_fails_the_request(client: MIClientProtocol) -> None:
    d1 = client.call("a")
    d2 = client.call("b")
    d3 = client.call("c")
    answer(client, {"jsonrpc": "2.0", "error": "boom", "id": 1})
    answer(client, {"jsonrpc": "2.0", "error": {"code": "404", "message": "x"}, "id": 2})
    answer(client, {"jsonrpc": "2.0", "id": 3})
    assert (error_of(d1, MIError).code, error_of(d2, MIError).code, str(failure_of(d3, MIError).value)) == (
        -32603,
        -32603,
        "-32603 reply without result or error",
    )
    assert client.pending == {}


# -- timeouts -----------------------------------------------------------------


def test_timeout(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("call_hold", {"callid": CALLID})
    clock.advance(4.999)
    no_result(d)
    clock.advance(0.001)
    reason = error_of(d, MITimeout)
    assert (reason.method, reason.timeout) == ("call_hold", 5)
    assert str(reason) == "OpenSIPS did not answer MI call_hold within 5 s"
    assert client.pending == {} and clock.getDelayedCalls() == []
    assert client.stats["timeouts"] == 1


@pytest.mark.parametrize(
    "timeout, text",
    [
        (130, "OpenSIPS did not answer MI t_uac_dlg within 130 s"),
        (0.5, "OpenSIPS did not answer MI t_uac_dlg within 0.5 s"),
    ],
)
def test_per_request_timeout(client: MIClientProtocol, clock: Clock, timeout: float, text: str) -> None:
    d = client.call("t_uac_dlg", {"method": "INVITE"}, timeout=timeout)
    other = client.call("which")
    clock.advance(timeout * 0.99)
    no_result(d)
    clock.advance(timeout * 0.01)
    assert str(failure_of(d, MITimeout).value) == text
    clock.advance(5)
    failure_of(other, MITimeout)


def test_late_reply_after_timeout_is_dropped(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("call_hold", {"callid": CALLID})
    clock.advance(5)
    failure_of(d, MITimeout)
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 1})  # no exception
    answer(client, {"jsonrpc": "2.0", "error": {"code": 404, "message": "x"}, "id": 1})
    # late replies of ended requests are counted apart from junk (issue 7, item 8)
    assert client.pending == {} and client.stats["late"] == 2 and client.stats["dropped"] == 0


# -- junk from the peer ---------------------------------------------------------


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'[{"jsonrpc":"2.0","result":"OK","id":1}]',
        b'"OK"',
        b"1",
        b'{"jsonrpc":"2.0","result":"OK"}',  # no id
        b'{"jsonrpc":"2.0","result":"OK","id":99}',  # unknown id
        b'{"jsonrpc":"2.0","result":"OK","id":null}',
        b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}',
        b"[" * 100_000,
    ],
)
def test_junk_is_dropped(client: MIClientProtocol, clock: Clock, datagram: bytes) -> None:
    d = client.call("call_hold", {"callid": CALLID})
    client.datagramReceived(datagram, PEER)
    no_result(d)
    assert list(client.pending) == ["1"] and len(clock.getDelayedCalls()) == 1
    assert client.stats["dropped"] == 1
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 1})
    assert result_of(d) == "OK"


def test_big_reply(client: MIClientProtocol) -> None:
    dialogs = [
        {"ID": f"{i:x}.1", "callid": f"call-{i}", "caller_sdp": "v=0\r\n" + "a" * 500} for i in range(115)
    ]
    data = json.dumps(
        {"jsonrpc": "2.0", "result": {"Dialogs": dialogs}, "id": 1}, separators=(",", ":")
    ).encode()
    assert 60_000 < len(data) <= MAX_DATAGRAM
    d = client.call("dlg_list")
    client.datagramReceived(data, PEER)
    assert result_of(d) == {"Dialogs": dialogs}


def test_max_datagram_is_udp_maximum() -> None:
    assert MAX_DATAGRAM == 65535


# -- provisional replies (t_uac_dlg with pass_provisional_replies) ------------


def test_provisional_reply_is_skipped(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("t_uac_dlg", {"method": "INVITE"}, timeout=130)
    answer(
        client, {"jsonrpc": "2.0", "result": {"Status": "180 Ringing", "Message": "Via: ...\r\n"}, "id": 1}
    )
    answer(client, {"jsonrpc": "2.0", "result": {"Status": "183 Session Progress"}, "id": 1})
    no_result(d)
    assert list(client.pending) == ["1"]
    clock.advance(3)
    final = {"Status": "200 OK", "RURI": "sip:slow@127.0.0.1:5083", "Message": "..."}
    answer(client, {"jsonrpc": "2.0", "result": final, "id": 1})
    assert result_of(d) == final
    assert client.pending == {} and clock.getDelayedCalls() == []


def test_provisional_then_failure_status(client: MIClientProtocol) -> None:
    d = client.call("t_uac_dlg", {"method": "INVITE"})
    answer(client, {"jsonrpc": "2.0", "result": {"Status": "180 Ringing"}, "id": 1})
    answer(client, {"jsonrpc": "2.0", "result": {"Status": "486 Busy Here"}, "id": 1})
    assert result_of(d) == {"Status": "486 Busy Here"}


def test_provisional_reply_does_not_extend_the_timeout(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("t_uac_dlg", {"method": "INVITE"}, timeout=10)
    clock.advance(9)
    answer(client, {"jsonrpc": "2.0", "result": {"Status": "180 Ringing"}, "id": 1})
    clock.advance(1)
    failure_of(d, MITimeout)


@pytest.mark.parametrize(
    "result, expected",
    [
        ({"Status": "180 Ringing"}, True),
        ({"Status": "100 Trying"}, True),
        ({"Status": "199 x"}, True),
        ({"Status": "200 OK"}, False),
        ({"Status": "408 Request Timeout"}, False),
        ({"Status": "1"}, False),
        ({"Status": "1xx"}, False),
        ({"Status": 180}, False),
        ({}, False),
        ("180 Ringing", False),
        (None, False),
    ],
)
def test_is_provisional(result: Any, expected: bool) -> None:
    assert is_provisional(result) is expected


# -- cancel and stop ----------------------------------------------------------


def test_cancel_forgets_the_request(client: MIClientProtocol, clock: Clock) -> None:
    d = client.call("call_hold", {"callid": CALLID})
    keep = client.call("which")
    d.cancel()
    failure_of(d, CancelledError)
    assert list(client.pending) == ["2"] and len(clock.getDelayedCalls()) == 1
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 1})  # late: dropped
    assert client.stats["late"] == 1 and client.stats["dropped"] == 0
    answer(client, {"jsonrpc": "2.0", "result": "v", "id": 2})
    assert result_of(keep) == "v"
    assert clock.getDelayedCalls() == []


def test_cancel_after_reply_is_harmless(client: MIClientProtocol) -> None:
    d = client.call("which")
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 1})
    d.cancel()
    assert result_of(d) == "OK"


def test_stop_fails_everything_pending(
    client: MIClientProtocol, clock: Clock, transport: FakeDatagramTransport
) -> None:
    d1 = client.call("call_hold", {"callid": CALLID})
    d2 = client.call("t_uac_dlg", {"method": "INVITE"}, timeout=130)
    client.doStop()
    for d, method in ((d1, "call_hold"), (d2, "t_uac_dlg")):
        reason = failure_of(d, MIUnavailable).value
        assert str(reason) == (f"OpenSIPS MI connection is not available: stopped while waiting for {method}")
    assert client.pending == {} and clock.getDelayedCalls() == []
    d3 = client.call("which")
    assert str(failure_of(d3, MIUnavailable).value) == (
        "OpenSIPS MI connection is not available: MI socket is not running"
    )
    assert len(transport.written) == 2 and clock.getDelayedCalls() == []


def test_call_before_the_socket_runs(clock: Clock) -> None:
    client = MIClientProtocol(clock, PEER)
    failure_of(client.call("which"), MIUnavailable)
    assert client.pending == {} and clock.getDelayedCalls() == []


def test_write_failure(client: MIClientProtocol, clock: Clock, transport: FakeDatagramTransport) -> None:
    def refuse(packet: bytes, addr: Any = None) -> None:
        raise OSError(90, "Message too long")

    transport.write = refuse  # type: ignore[method-assign]
    d = client.call("t_uac_dlg", {"body": "x" * 70000})
    assert str(failure_of(d, MIUnavailable).value).startswith(
        "OpenSIPS MI connection is not available: cannot send MI t_uac_dlg: "
    )
    assert client.pending == {} and clock.getDelayedCalls() == []


def test_restarted_socket_works_again(client: MIClientProtocol, clock: Clock) -> None:
    client.doStop()
    transport = FakeDatagramTransport()
    client.makeConnection(transport)
    outcome: list[Any] = []
    client.call("which").addBoth(outcome.append)
    assert outcome == [] and len(transport.written) == 1
    request_id = json.loads(transport.written[0][0])["id"]
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": request_id})
    assert outcome == ["OK"]


# -- retries of idempotent requests (issue 7, item 3) ----------------------------


def sent(transport: FakeDatagramTransport) -> list[tuple[Any, str]]:
    return [(json.loads(d)["id"], json.loads(d)["method"]) for d, _ in transport.written]


@pytest.mark.parametrize("method", sorted(IDEMPOTENT))
def test_idempotent_request_is_resent_with_a_fresh_id(
    client: MIClientProtocol, clock: Clock, transport: FakeDatagramTransport, method: str
) -> None:
    d = client.call(method, {"x": 1})
    clock.advance(5 / 3)
    clock.advance(5 / 3)
    assert sent(transport) == [(1, method), (2, method), (3, method)]
    assert sorted(client.pending) == ["1", "2", "3"] and client.stats["retries"] == 2
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 2})  # a reply to any send answers
    assert result_of(d) == "OK" and client.pending == {} and clock.getDelayedCalls() == []
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 3})
    assert client.stats["late"] == 1 and client.stats["dropped"] == 0


def test_idempotent_request_times_out_after_its_whole_timeout(
    client: MIClientProtocol, clock: Clock, transport: FakeDatagramTransport
) -> None:
    d = client.call("dlg_end_dlg", {"dialog_id": CALLID})
    clock.advance(4.99)
    no_result(d)
    clock.advance(0.01)
    assert str(failure_of(d, MITimeout).value) == "OpenSIPS did not answer MI dlg_end_dlg within 5 s"
    assert len(transport.written) == 3 and client.pending == {} and client.stats["timeouts"] == 1


@pytest.mark.parametrize(
    "method", ["t_uac_dlg", "call_transfer", "call_hold", "tm:uac_dlg", "callops:transfer"]
)
def test_other_requests_are_never_resent(
    client: MIClientProtocol, clock: Clock, transport: FakeDatagramTransport, method: str
) -> None:
    d = client.call(method, {"x": 1})
    clock.advance(5)
    failure_of(d, MITimeout)
    assert len(transport.written) == 1 and client.stats["retries"] == 0


def test_no_retries_when_configured(clock: Clock, transport: FakeDatagramTransport) -> None:
    client = MIClientProtocol(clock, PEER, timeout=5, retries=0)
    client.makeConnection(transport)
    d = client.call("dlg_list")
    clock.advance(5)
    failure_of(d, MITimeout)
    assert len(transport.written) == 1


# -- plain-text replies (trace 3.4 h_errors) -------------------------------------


@pytest.mark.parametrize(
    "text, code, message",
    [(b"500 Internal error", 500, "Internal error"), (b"400 Parse_error", 400, "Parse_error")],
)
def test_plain_text_reply_fails_the_one_pending_request(
    client: MIClientProtocol, text: bytes, code: int, message: str
) -> None:
    d = client.call("call_transfer", {"callid": CALLID})
    answer(client, text)
    error = error_of(d, MIError)
    assert (error.method, error.code, error.message) == ("call_transfer", code, message)
    assert client.pending == {} and client.stats["text"] == 1 and client.stats["dropped"] == 0


def test_plain_text_reply_with_several_pending_is_named_by_the_timeout(
    client: MIClientProtocol, clock: Clock
) -> None:
    d1 = client.call("call_hold", {"callid": CALLID})
    d2 = client.call("call_unhold", {"callid": CALLID})
    answer(client, b"500 Internal error")
    no_result(d1)
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 2})
    clock.advance(5)
    error = error_of(d1, MITimeoutAfterText)
    assert isinstance(error, MITimeout)
    assert str(error) == (
        "OpenSIPS did not answer MI call_hold within 5 s (a non-JSON datagram arrived meanwhile: "
        "'500 Internal error')"
    )
    assert result_of(d2) == "OK"


def test_plain_text_before_the_request_is_not_blamed(client: MIClientProtocol, clock: Clock) -> None:
    client.call("a")
    client.call("b")
    answer(client, b"400 Parse_error")
    clock.advance(1)
    d = client.call("call_hold", {"callid": CALLID})
    clock.advance(5)
    assert str(failure_of(d, MITimeout).value) == "OpenSIPS did not answer MI call_hold within 5 s"


def test_reply_observers_see_every_datagram_from_the_peer(client: MIClientProtocol) -> None:
    seen: list[None] = []
    client.reply_observers.append(lambda: seen.append(None))
    answer(client, b"junk")
    answer(client, {"jsonrpc": "2.0", "result": "OK", "id": 77})
    client.datagramReceived(b"x", ("10.0.0.1", 8080))  # not the peer
    assert len(seen) == 2
