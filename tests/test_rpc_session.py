"""
L{callapi.rpc}: per-client sessions (dispatch, cmd_id, error responses,
ordering of the C{Started} result before notifications, batches,
notifications) and the clean-up when a client disconnects.

Everything runs synchronously: L{FakeMIClient}, the real L{EventHub}, a
L{Clock}, and C{send=list.append} in place of the WebSocket.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from callapi.errors import MIError
from callapi.interfaces import INotificationSink
from callapi.opensips.events import EventHub
from callapi.rpc import CommandRunner, Session
from callapi.scenarios import Context
from callapi.testing.fakes import FakeMIClient

CALLID = "6c93c431e29d3500"  # trace f_hold_unhold


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict(text: str) -> Any:
    """
    Decode one written message as strict JSON (no NaN/Infinity) that is also
    valid WebSocket text (encodable as UTF-8).
    """
    assert isinstance(text, str)
    text.encode("utf-8")
    return json.loads(text, parse_constant=_no_constant)


@attrs.define
class Env:
    mi: FakeMIClient
    hub: EventHub
    clock: Clock
    runner: CommandRunner
    session: Session
    out: list[str]

    def send(self, message: Any) -> None:
        """
        Deliver one client message (a JSON value, or raw bytes/str as is).
        """
        if not isinstance(message, (bytes, str)):
            message = json.dumps(message).encode("utf-8")
        self.session.received(message)

    def written(self) -> list[Any]:
        return [strict(text) for text in self.out]

    def take(self) -> list[Any]:
        """
        Messages written since the last take().
        """
        messages = self.written()
        self.out.clear()
        return messages

    def hold_event(self, leg: str, state: str, action: str = "hold", callid: str = CALLID) -> None:
        self.hub.dispatch("E_CALL_HOLD", {"callid": callid, "leg": leg, "action": action, "state": state})


def make_env(max_per_session: int = 1000) -> Env:
    mi, hub, clock = FakeMIClient(), EventHub(), Clock()
    runner = CommandRunner(Context(mi=mi, events=hub, clock=clock), max_per_session=max_per_session)
    out: list[str] = []
    session = runner.open(send=out.append)
    return Env(mi, hub, clock, runner, session, out)


@pytest.fixture
def env() -> Env:
    return make_env()


def req(method: str, params: Any = None, request_id: Any = 1, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    message.update(extra)
    return message


def note(method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def started(request_id: Any, cmd_id: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"cmd_id": cmd_id, "event": "Started"}}


def err(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def event(method: str, cmd_id: str, name: str, data: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"cmd_id": cmd_id, "event": name}
    if data is not None:
        params["data"] = data
    return {"jsonrpc": "2.0", "method": method, "params": params}


def test_session_is_a_notification_sink(env: Env) -> None:
    assert verifyObject(INotificationSink, env.session)


# -- -32700 parse error -------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"\xff\xfe\xfd",
        b'{"jsonrpc":"2.0","method":"Echo","id":NaN}',
        b'{"jsonrpc":"2.0","method":"Echo","params":{"x":Infinity},"id":1}',
        b"",
    ],
)
def test_parse_error_has_null_id(env: Env, payload: bytes) -> None:
    env.send(payload)
    [response] = env.take()
    assert response["id"] is None
    assert set(response) == {"jsonrpc", "id", "error"} and response["jsonrpc"] == "2.0"
    assert (response["error"]["code"], response["error"]["message"]) == (-32700, "Parse error")
    assert env.mi.requests == []


# -- -32600 invalid request ---------------------------------------------------


@pytest.mark.parametrize(
    "message, expected",
    [
        ([1], None),  # batch: see test_batch_*; here a non-object element
        (5, err(None, -32600, "Invalid Request", "a request must be a JSON object")),
        ('"CallHold"', err(None, -32600, "Invalid Request", "a request must be a JSON object")),
        ("null", err(None, -32600, "Invalid Request", "a request must be a JSON object")),
        ({"method": "Echo", "id": 3}, err(3, -32600, "Invalid Request", 'jsonrpc must be exactly "2.0"')),
        (
            {"jsonrpc": "1.0", "method": "Echo", "id": 3},
            err(3, -32600, "Invalid Request", 'jsonrpc must be exactly "2.0"'),
        ),
        ({"jsonrpc": "2.0", "id": 3}, err(3, -32600, "Invalid Request", "method must be a string")),
        (
            {"jsonrpc": "2.0", "method": 42, "id": "m"},
            err("m", -32600, "Invalid Request", "method must be a string"),
        ),
        (
            {"jsonrpc": "2.0", "method": "Echo", "id": True},
            err(None, -32600, "Invalid Request", "id must be a string, a number or null"),
        ),
        (
            {"jsonrpc": "2.0", "method": "Echo", "id": {"x": 1}},
            err(None, -32600, "Invalid Request", "id must be a string, a number or null"),
        ),
    ],
)
def test_invalid_request(env: Env, message: Any, expected: Any) -> None:
    env.send(message)
    if expected is None:  # [1]
        assert env.take() == [[err(None, -32600, "Invalid Request", "a request must be a JSON object")]]
    else:
        assert env.take() == [expected]
    assert env.mi.requests == []


def test_empty_batch_is_a_single_invalid_request(env: Env) -> None:
    env.send(b"[]")
    assert env.take() == [err(None, -32600, "Invalid Request", "empty batch")]


# -- -32601 method not found --------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "Nope",
        "callhold",
        "CALLHOLD",
        "callHold",
        "CallHold ",
        "echo",
        "start",
        "run",
        "__init__",
        "__class__",
        "check",
        "method",
        "",
        "Command",
        "Context",
        "Settings",
    ],
)
def test_unknown_method(env: Env, method: str) -> None:
    env.send(req(method, {"callid": CALLID}, request_id=11))
    assert env.take() == [err(11, -32601, "Method not found", method)]
    assert env.mi.requests == [] and env.runner.running == {}


# -- -32602 invalid params ----------------------------------------------------


BAD_CALLID = "callid is not a valid SIP Call-ID (RFC 3261 word[@word])"
BAD_CMD_ID = "cmd_id must be a string of 1 to 128 printable ASCII characters without spaces"


@pytest.mark.parametrize(
    "method, params, data",
    [
        ("CallHold", [CALLID], "params must be an object (named parameters)"),
        ("CallHold", {}, "missing parameter callid"),
        ("CallUnhold", {"cmd_id": "u1"}, "missing parameter callid"),
        ("CallEnd", {"dialog_id": CALLID}, "missing parameter callid"),
        ("CallHold", {"callid": "a b"}, BAD_CALLID),
        ("CallHold", {"callid": CALLID + "\r\nVia: SIP/2.0/UDP evil"}, BAD_CALLID),
        ("CallHold", {"callid": CALLID + "\n"}, BAD_CALLID),
        ("CallHold", {"callid": "x" * 257}, BAD_CALLID),
        ("CallHold", {"callid": ""}, "callid must be a non-empty string (a SIP Call-ID)"),
        ("CallHold", {"callid": 12345}, "callid must be a non-empty string (a SIP Call-ID)"),
        ("CallHold", {"callid": None}, "callid must be a non-empty string (a SIP Call-ID)"),
        (
            "CallHold",
            {"callid": CALLID, "leg": "caller"},
            "leg needs per-leg hold (OpenSIPS 4.0 callops); this OpenSIPS does not support it",
        ),
        ("CallEnd", {"callid": CALLID, "b": 1, "a": 2}, "unknown parameter a, b"),
        ("Echo", {"cmd_id": ""}, BAD_CMD_ID),
        ("Echo", {"cmd_id": "a b"}, BAD_CMD_ID),
        ("Echo", {"cmd_id": "x" * 129}, BAD_CMD_ID),
        ("Echo", {"cmd_id": 7}, BAD_CMD_ID),
        ("Echo", {"cmd_id": None}, BAD_CMD_ID),
        ("Echo", {"cmd_id": "é"}, BAD_CMD_ID),
        ("CallHold", {"callid": CALLID, "cmd_id": "tab\there"}, BAD_CMD_ID),
    ],
)
def test_invalid_params(env: Env, method: str, params: Any, data: str) -> None:
    env.send(req(method, params, request_id="p"))
    assert env.take() == [err("p", -32602, "Invalid params", data)]
    assert env.mi.requests == [] and env.hub.registrations == 0
    assert env.runner.running == {} and env.clock.getDelayedCalls() == []


def test_longest_cmd_id_is_accepted(env: Env) -> None:
    cmd_id = "~" * 128
    env.send(req("Echo", {"cmd_id": cmd_id}))
    assert env.take()[0] == started(1, cmd_id)


# -- duplicate cmd_id, limits -------------------------------------------------


def test_duplicate_running_cmd_id(env: Env) -> None:
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h1"}, request_id=1))
    assert env.take() == [started(1, "h1")]
    env.send(req("Echo", {"cmd_id": "h1"}, request_id=2))
    env.send(req("CallEnd", {"callid": "other", "cmd_id": "h1"}, request_id=3))
    assert env.take() == [
        err(2, -32001, "cmd_id already running", "h1"),
        err(3, -32001, "cmd_id already running", "h1"),
    ]
    assert env.mi.methods() == ["call_hold"]


def test_duplicate_cmd_id_within_one_batch(env: Env) -> None:
    env.send(
        [
            req("CallHold", {"callid": CALLID, "cmd_id": "d"}, request_id=1),
            req("CallEnd", {"callid": CALLID, "cmd_id": "d"}, request_id=2),
        ]
    )
    assert env.take() == [[started(1, "d"), err(2, -32001, "cmd_id already running", "d")]]
    assert env.mi.methods() == ["call_hold"]


def test_cmd_id_can_be_reused_once_ended(env: Env) -> None:
    env.send(req("Echo", {"cmd_id": "e"}, request_id=1))
    env.send(req("Echo", {"cmd_id": "e"}, request_id=2))
    assert [m.get("result") for m in env.take() if "id" in m] == [
        {"cmd_id": "e", "event": "Started"},
        {"cmd_id": "e", "event": "Started"},
    ]


def test_same_cmd_id_on_two_sessions(env: Env) -> None:
    other_out: list[str] = []
    other = env.runner.open(send=other_out.append)
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h"}))
    other.received(json.dumps(req("CallHold", {"callid": CALLID, "cmd_id": "h"})))
    assert env.take() == [started(1, "h")]
    assert [strict(t) for t in other_out] == [started(1, "h")]
    assert sorted(env.runner.running) == [(env.session.number, "h"), (other.number, "h")]


def test_server_made_cmd_id_is_a_uuid(env: Env) -> None:
    import uuid

    env.send(req("CallHold", {"callid": CALLID}))
    env.send(req("CallHold", {"callid": CALLID}, request_id=2))
    first, second = (m["result"]["cmd_id"] for m in env.take())
    assert str(uuid.UUID(first)) == first and first != second


def test_limit_of_running_commands_per_connection() -> None:
    env = make_env(max_per_session=2)
    env.send(req("CallHold", {"callid": "c1", "cmd_id": "a"}, request_id=1))
    env.send(req("CallHold", {"callid": "c2", "cmd_id": "b"}, request_id=2))
    env.send(req("Echo", {"cmd_id": "c"}, request_id=3))
    assert env.take() == [
        started(1, "a"),
        started(2, "b"),
        err(3, -32004, "too many running commands", "limit 2 per connection"),
    ]
    # another connection has its own limit
    other_out: list[str] = []
    other = env.runner.open(send=other_out.append)
    other.received(json.dumps(req("Echo", {"cmd_id": "c"}, request_id=3)))
    assert strict(other_out[0]) == started(3, "c")
    # once one command ends, a new one is accepted
    env.mi.error("call_hold", MIError("call_hold", 404, "Dialog not found"))
    env.take()
    env.send(req("Echo", {"cmd_id": "c"}, request_id=4))
    assert env.take()[0] == started(4, "c")


# -- notifications (no id) ----------------------------------------------------


def test_notification_gets_no_response_but_runs(env: Env) -> None:
    env.send(note("Echo", {"cmd_id": "n1", "a": 1}))
    assert env.take() == [event("Echo", "n1", "Reply", {"a": 1}), event("Echo", "n1", "Ended")]


def test_notification_command_sends_its_mi_request(env: Env) -> None:
    env.send(note("CallEnd", {"callid": CALLID, "cmd_id": "n2"}))
    assert env.take() == []
    assert [tuple(r) for r in env.mi.requests] == [("dlg_end_dlg", {"dialog_id": CALLID}, None)]
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.take() == [event("CallEnd", "n2", "Ended")]


@pytest.mark.parametrize(
    "message",
    [
        note("Nope", {}),
        note("CallHold", {}),
        note("CallHold", {"callid": "a b"}),
        note("Echo", {"cmd_id": "bad id"}),
    ],
)
def test_failing_notification_is_silent(env: Env, message: Any) -> None:
    env.send(message)
    assert env.take() == [] and env.mi.requests == []


def test_notification_with_array_params_gets_no_response(env: Env) -> None:
    env.send(note("CallHold", [CALLID]))
    assert env.take() == []


def test_duplicate_cmd_id_notification_is_silent(env: Env) -> None:
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h"}))
    env.take()
    env.send(note("Echo", {"cmd_id": "h"}))
    assert env.take() == []


# -- batches ------------------------------------------------------------------


def test_batch_mixed_valid_and_invalid(env: Env) -> None:
    env.send(
        [
            req("Echo", {"cmd_id": "e1", "x": 1}, request_id=1),
            1,
            req("Nope", {}, request_id=3),
            note("Echo", {"cmd_id": "e2"}),
            req("CallHold", {}, request_id=5),
            {"jsonrpc": "2.0", "method": "Echo", "id": 6, "params": {"cmd_id": "e3"}},
        ]
    )
    assert env.take() == [
        [
            started(1, "e1"),
            err(None, -32600, "Invalid Request", "a request must be a JSON object"),
            err(3, -32601, "Method not found", "Nope"),
            err(5, -32602, "Invalid params", "missing parameter callid"),
            started(6, "e3"),
        ],
        event("Echo", "e1", "Reply", {"x": 1}),
        event("Echo", "e1", "Ended"),
        event("Echo", "e2", "Reply", {}),
        event("Echo", "e2", "Ended"),
        event("Echo", "e3", "Reply", {}),
        event("Echo", "e3", "Ended"),
    ]


def test_batch_of_notifications_writes_no_response(env: Env) -> None:
    env.send(
        [note("Echo", {"cmd_id": "a"}), note("Nope", {}), note("CallEnd", {"callid": CALLID, "cmd_id": "b"})]
    )
    assert env.take() == [event("Echo", "a", "Reply", {}), event("Echo", "a", "Ended")]
    assert env.mi.methods() == ["dlg_end_dlg"]


def test_batch_of_failing_notifications_writes_nothing(env: Env) -> None:
    env.send([note("Nope", {}), note("CallHold", {})])
    assert env.out == []


def test_batch_response_is_written_before_notifications(env: Env) -> None:
    # Commands that finish inside run(): Echo, and a CallEnd whose MI client
    # answers synchronously.  The batch array must still come first.
    calls = env.mi.call

    def answer_at_once(method: str, params: Any = None, timeout: Any = None) -> Any:
        d = calls(method, params, timeout)
        env.mi.reply(len(env.mi.requests) - 1, "OK")
        return d

    env.mi.call = answer_at_once  # type: ignore[method-assign]
    env.send(
        [
            req("Echo", {"cmd_id": "a"}, request_id=1),
            req("CallEnd", {"callid": CALLID, "cmd_id": "b"}, request_id=2),
        ]
    )
    assert env.take() == [
        [started(1, "a"), started(2, "b")],
        event("Echo", "a", "Reply", {}),
        event("Echo", "a", "Ended"),
        event("CallEnd", "b", "Ended"),
    ]


def test_single_request_answered_synchronously_still_starts_first(env: Env) -> None:
    calls = env.mi.call

    def answer_at_once(method: str, params: Any = None, timeout: Any = None) -> Any:
        d = calls(method, params, timeout)
        env.mi.reply(len(env.mi.requests) - 1, "OK")
        return d

    env.mi.call = answer_at_once  # type: ignore[method-assign]
    env.send(req("CallEnd", {"callid": CALLID, "cmd_id": "b"}, request_id=2))
    assert env.take() == [started(2, "b"), event("CallEnd", "b", "Ended")]


# -- ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_id",
    [
        "123456789012345678901234567890",
        "-9007199254740993",
        "0",
        "1.5",
        '"abc"',
        '""',
        '"1"',
        "null",
        '"\\u00e9t\\u00e9"',
    ],
)
def test_id_is_echoed_exactly(env: Env, raw_id: str) -> None:
    env.send('{"jsonrpc":"2.0","id":%s,"method":"Echo","params":{"cmd_id":"e"}}' % raw_id)
    env.send('{"jsonrpc":"2.0","id":%s,"method":"Nope"}' % raw_id)
    ok, failed = env.out[0], env.out[-1]
    assert ok == '{"jsonrpc":"2.0","id":%s,"result":{"cmd_id":"e","event":"Started"}}' % (
        json.dumps(json.loads(raw_id), ensure_ascii=False)
    )
    assert strict(ok)["id"] == json.loads(raw_id) and strict(failed)["id"] == json.loads(raw_id)
    assert type(strict(ok)["id"]) is type(json.loads(raw_id))


def test_big_integer_id_text(env: Env) -> None:
    env.send(b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"Echo"}')
    assert env.out[0].startswith('{"jsonrpc":"2.0","id":123456789012345678901234567890,"result"')


def test_overflowing_id_never_produces_invalid_json(env: Env) -> None:
    env.send(b'{"jsonrpc":"2.0","id":1e400,"method":"Echo","params":{"x":1e400}}')
    assert env.out
    for text in env.out:
        strict(text)


def test_lone_surrogate_never_produces_unsendable_text(env: Env) -> None:
    env.send(b'{"jsonrpc":"2.0","id":"\\ud800","method":"Echo","params":{"x":"\\udfff"}}')
    assert env.out
    for text in env.out:
        strict(text)


# -- command flow through the session ----------------------------------------


def test_echo(env: Env) -> None:
    env.send(req("Echo", {"cmd_id": "e", "a": [1, {"b": None}], "s": "é"}, request_id=4))
    assert env.take() == [
        started(4, "e"),
        event("Echo", "e", "Reply", {"a": [1, {"b": None}], "s": "é"}),
        event("Echo", "e", "Ended"),
    ]
    assert env.runner.running == {} and env.session.running == {}


def test_started_is_written_before_the_first_notification(env: Env) -> None:
    env.send(req("CallEnd", {"callid": CALLID, "cmd_id": "x"}, request_id=8))
    assert env.take() == [started(8, "x")]
    env.mi.error("dlg_end_dlg", MIError("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert env.take() == [
        event("CallEnd", "x", "Error", "404 Requested Dialog not found"),
        event("CallEnd", "x", "Ended"),
    ]


def test_call_hold_notifications_on_the_wire(env: Env) -> None:
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h"}, request_id=2))
    env.hold_event("caller", "start")
    env.hold_event("callee", "start")
    env.hold_event("caller", "ok")
    env.mi.reply("call_hold", "OK")
    env.hold_event("callee", "ok")
    env.clock.advance(0)
    assert env.take() == [
        started(2, "h"),
        event("CallHold", "h", "CallHolding"),
        event("CallHold", "h", "CallHoldStart", {"leg": "caller"}),
        event("CallHold", "h", "CallHoldStart", {"leg": "callee"}),
        event("CallHold", "h", "CallHoldSuccessful", {"leg": "caller"}),
        event("CallHold", "h", "CallHoldSuccessful", {"leg": "callee"}),
        event("CallHold", "h", "Ended"),
    ]
    assert env.runner.running == {} and env.hub.registrations == 0
    assert env.clock.getDelayedCalls() == []


# -- disconnects and shutdown -------------------------------------------------


def _reach(env: Env, stage: str) -> None:
    if stage == "waiting for MI reply":
        return
    if stage == "events before MI reply":
        env.hold_event("caller", "start")
        env.hold_event("callee", "start")
        return
    env.mi.reply("call_hold", "OK")
    if stage == "MI OK, no event yet":
        env.clock.advance(0)  # settled: the no-event grace timer runs
        return
    assert stage == "one leg done"
    env.hold_event("caller", "start")
    env.hold_event("callee", "start")
    env.hold_event("caller", "ok")
    env.clock.advance(0)


@pytest.mark.parametrize(
    "stage", ["waiting for MI reply", "events before MI reply", "MI OK, no event yet", "one leg done"]
)
def test_disconnect_mid_hold_releases_everything(env: Env, stage: str) -> None:
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h"}))
    _reach(env, stage)
    assert env.hub.registrations == 1 and env.clock.getDelayedCalls()
    assert env.runner.running and env.session.running
    env.take()

    env.runner.closed(env.session)

    assert env.out == []
    if stage in ("waiting for MI reply", "events before MI reply"):
        assert env.mi.requests[0].state == "cancelled"
    assert env.mi.pending == {}
    assert env.hub.registrations == 0
    assert env.clock.getDelayedCalls() == []
    assert env.runner.running == {} and env.session.running == {}
    assert env.session.number not in env.runner.sessions
    # nothing the peer does later reaches the gone client
    env.hold_event("callee", "ok")
    env.hold_event("caller", "fail")
    env.clock.advance(1000)
    assert env.out == []


def test_disconnect_leaves_other_sessions_alone(env: Env) -> None:
    other_out: list[str] = []
    other = env.runner.open(send=other_out.append)
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h"}))
    other.received(json.dumps(req("CallHold", {"callid": CALLID, "cmd_id": "h"})))
    env.runner.closed(env.session)
    assert list(env.runner.running) == [(other.number, "h")]
    assert env.hub.registrations == 1
    env.mi.reply(1, "OK")
    assert strict(other_out[-1]) == event("CallHold", "h", "CallHolding")


def test_stop_fails_running_commands_and_refuses_new_ones(env: Env) -> None:
    env.send(req("CallHold", {"callid": CALLID, "cmd_id": "h"}))
    env.take()
    env.runner.stop()
    assert env.take() == [
        event("CallHold", "h", "Error", "callapi is shutting down"),
        event("CallHold", "h", "Ended"),
    ]
    assert env.hub.registrations == 0 and env.clock.getDelayedCalls() == []
    env.send(req("Echo", {}, request_id=9))
    assert env.take() == [err(9, -32003, "callapi is shutting down")]


def test_send_failure_is_contained(env: Env) -> None:
    def broken(text: str) -> None:
        raise ConnectionError("gone")

    session = env.runner.open(send=broken)
    session.received(json.dumps(req("Echo", {"cmd_id": "e"})))  # must not raise
    assert env.runner.running == {}
