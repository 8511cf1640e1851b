"""
L{callapi.jsonrpc}: parsing and validating client messages, building
responses (JSON-RPC 2.0 specification; docs/protocol.md).

The session-level behaviour (which response is written when) is in
C{test_rpc_session.py}; this file pins the pure functions.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from callapi import jsonrpc
from callapi.errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, RPCError


def only(parsed: jsonrpc.Parsed) -> jsonrpc.Item:
    assert not parsed.batch
    assert len(parsed.items) == 1
    return parsed.items[0]


def error_of(item: jsonrpc.Item) -> tuple[Any, int, str, Any]:
    assert isinstance(item, jsonrpc.Invalid), item
    return item.id, item.error.code, item.error.message, item.error.data


# -- parse errors (-32700, id null) ----------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b"",
        b"   ",
        b'{"jsonrpc": "2.0", "method": "Echo", "id": 1',  # truncated
        b"{'jsonrpc': '2.0'}",  # not JSON quotes
        b"\xff\xfe{}",  # invalid UTF-8
        b'{"jsonrpc": "2.0", "method": "Echo", "params": {"a": "\xc3"}, "id": 1}',
        b'{"jsonrpc": "2.0", "method": "Echo", "id": NaN}',
        b'{"jsonrpc": "2.0", "method": "Echo", "params": {"x": Infinity}, "id": 1}',
        b'{"jsonrpc": "2.0", "method": "Echo", "params": {"x": -Infinity}, "id": 1}',
        b"[" * 100_000 + b"]" * 100_000,  # absurd nesting
        b'{"jsonrpc": "2.0", "method": "Echo", "id": 1} {"again": 1}',  # two values
    ],
)
def test_unparsable_is_parse_error_with_null_id(payload: bytes) -> None:
    request_id, code, message, data = error_of(only(jsonrpc.parse(payload)))
    assert (request_id, code, message) == (None, PARSE_ERROR, "Parse error")
    assert isinstance(data, str) and data


def test_text_and_bytes_parse_alike() -> None:
    text = '{"jsonrpc":"2.0","method":"Echo","params":{"é":"ü"},"id":"x"}'
    assert jsonrpc.parse(text) == jsonrpc.parse(text.encode("utf-8"))
    assert only(jsonrpc.parse(text)) == jsonrpc.Request("Echo", {"é": "ü"}, "x", False)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"jsonrpc": "2.0", "method": "Echo", "id": 1e400}',
        b'{"jsonrpc": "2.0", "method": "Echo", "params": {"x": -1e999}, "id": 1}',
    ],
)
def test_overflowing_number_is_parse_error(payload: bytes) -> None:
    request_id, code, message, _ = error_of(only(jsonrpc.parse(payload)))
    assert (request_id, code, message) == (None, PARSE_ERROR, "Parse error")


# -- invalid requests (-32600) ----------------------------------------------

NOT_OBJECT = "a request must be a JSON object"
BAD_VERSION = 'jsonrpc must be exactly "2.0"'
BAD_METHOD = "method must be a string"
BAD_ID = "id must be a string, a number or null"


@pytest.mark.parametrize(
    "message, expected",
    [
        (1, (None, NOT_OBJECT)),
        ("Echo", (None, NOT_OBJECT)),
        (None, (None, NOT_OBJECT)),
        (True, (None, NOT_OBJECT)),
        ({"method": "Echo", "id": 7}, (7, BAD_VERSION)),
        ({"jsonrpc": "1.0", "method": "Echo", "id": 7}, (7, BAD_VERSION)),
        ({"jsonrpc": 2.0, "method": "Echo", "id": 7}, (7, BAD_VERSION)),
        ({"jsonrpc": "2.0", "id": "a"}, ("a", BAD_METHOD)),
        ({"jsonrpc": "2.0", "method": 5, "id": "a"}, ("a", BAD_METHOD)),
        ({"jsonrpc": "2.0", "method": None, "id": None}, (None, BAD_METHOD)),
        ({"jsonrpc": "2.0", "method": ["Echo"], "id": 1}, (1, BAD_METHOD)),
        ({"jsonrpc": "2.0", "method": "Echo", "id": True}, (None, BAD_ID)),
        ({"jsonrpc": "2.0", "method": "Echo", "id": False}, (None, BAD_ID)),
        ({"jsonrpc": "2.0", "method": "Echo", "id": {"a": 1}}, (None, BAD_ID)),
        ({"jsonrpc": "2.0", "method": "Echo", "id": [1]}, (None, BAD_ID)),
    ],
)
def test_invalid_request(message: Any, expected: tuple[Any, str]) -> None:
    item = only(jsonrpc.parse(json.dumps(message)))
    assert error_of(item) == (expected[0], INVALID_REQUEST, "Invalid Request", expected[1])


def test_empty_batch_is_one_invalid_request_not_a_batch() -> None:
    parsed = jsonrpc.parse(b"[]")
    assert parsed.batch is False
    assert [error_of(i) for i in parsed.items] == [(None, INVALID_REQUEST, "Invalid Request", "empty batch")]


@pytest.mark.parametrize("params", [[], ["6c93c431e29d3500"], "callid", 5, None])
def test_params_must_be_an_object(params: Any) -> None:
    item = only(
        jsonrpc.parse(json.dumps({"jsonrpc": "2.0", "method": "CallHold", "params": params, "id": 9}))
    )
    assert error_of(item) == (
        9,
        INVALID_PARAMS,
        "Invalid params",
        "params must be an object (named parameters)",
    )


# -- valid requests -----------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    [
        0,
        -1,
        1,
        2**63,
        12345678901234567890123456789,
        1.5,
        "",
        "abc",
        "1",
        None,
    ],
)
def test_request_keeps_the_id_exactly(request_id: Any) -> None:
    item = only(jsonrpc.parse(json.dumps({"jsonrpc": "2.0", "method": "Echo", "id": request_id})))
    assert item == jsonrpc.Request("Echo", {}, request_id, False)
    assert type(item.id) is type(request_id)


def test_request_without_id_is_a_notification() -> None:
    item = only(jsonrpc.parse(b'{"jsonrpc":"2.0","method":"CallEnd","params":{"callid":"x"}}'))
    assert item == jsonrpc.Request("CallEnd", {"callid": "x"}, None, True)


def test_explicit_null_id_is_not_a_notification() -> None:
    item = only(jsonrpc.parse(b'{"jsonrpc":"2.0","method":"Echo","id":null}'))
    assert isinstance(item, jsonrpc.Request) and item.is_notification is False


def test_method_is_kept_verbatim() -> None:
    # Case and unknown names are the session's business (-32601), not parse's.
    for method in ("callhold", "CALLHOLD", "start", "__init__", ""):
        item = only(jsonrpc.parse(json.dumps({"jsonrpc": "2.0", "method": method, "id": 1})))
        assert item == jsonrpc.Request(method, {}, 1, False)


def test_batch_keeps_order_and_validates_each_element() -> None:
    parsed = jsonrpc.parse(
        json.dumps(
            [
                {"jsonrpc": "2.0", "method": "Echo", "id": 1},
                1,
                {"jsonrpc": "2.0", "method": "CallEnd", "params": {"callid": "x"}},
                {"jsonrpc": "1.0", "method": "Echo", "id": 4},
            ]
        )
    )
    assert parsed.batch is True
    assert parsed.items[0] == jsonrpc.Request("Echo", {}, 1, False)
    assert error_of(parsed.items[1]) == (None, INVALID_REQUEST, "Invalid Request", NOT_OBJECT)
    assert parsed.items[2] == jsonrpc.Request("CallEnd", {"callid": "x"}, None, True)
    assert error_of(parsed.items[3]) == (4, INVALID_REQUEST, "Invalid Request", BAD_VERSION)


def test_batch_of_one() -> None:
    parsed = jsonrpc.parse(b'[{"jsonrpc":"2.0","method":"Echo","id":1}]')
    assert parsed.batch is True and parsed.items == [jsonrpc.Request("Echo", {}, 1, False)]


def test_nested_batch_element_is_invalid() -> None:
    parsed = jsonrpc.parse(b"[[]]")
    assert parsed.batch is True
    assert [error_of(i) for i in parsed.items] == [(None, INVALID_REQUEST, "Invalid Request", NOT_OBJECT)]


# -- building ---------------------------------------------------------------


def test_dumps_is_compact_and_keeps_utf8() -> None:
    assert jsonrpc.dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


def test_result_response() -> None:
    big = 12345678901234567890123456789
    assert jsonrpc.dumps(jsonrpc.result(big, {"cmd_id": "c", "event": "Started"})) == (
        '{"jsonrpc":"2.0","id":12345678901234567890123456789,"result":{"cmd_id":"c","event":"Started"}}'
    )


def test_error_response_with_and_without_data() -> None:
    assert jsonrpc.error(None, RPCError(PARSE_ERROR, "Parse error")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Parse error"},
    }
    assert jsonrpc.error("x", RPCError(-32601, "Method not found", "Nope")) == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": -32601, "message": "Method not found", "data": "Nope"},
    }


def test_notification_omits_data_only_when_none() -> None:
    assert jsonrpc.notification("CallEnd", "c1", "Ended") == {
        "jsonrpc": "2.0",
        "method": "CallEnd",
        "params": {"cmd_id": "c1", "event": "Ended"},
    }
    assert jsonrpc.notification("CallHold", "c1", "Error", "404 Dialog not found") == {
        "jsonrpc": "2.0",
        "method": "CallHold",
        "params": {"cmd_id": "c1", "event": "Error", "data": "404 Dialog not found"},
    }
    assert jsonrpc.notification("Echo", "c1", "Reply", {})["params"]["data"] == {}
    assert jsonrpc.notification("Echo", "c1", "Reply", "")["params"]["data"] == ""
