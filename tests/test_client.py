"""Tests for ``callapi.cli.client``: pure logic, argument parsing, and end-to-end
runs against a scripted Autobahn server on loopback (port 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure

from callapi.cli.client import (
    EXIT_COMMAND_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    ClientOptions,
    CommandSession,
    UsageError,
    main,
    parse_args,
    parse_pair,
    parse_params,
    run,
)

REPO = Path(__file__).resolve().parent.parent
URL = "ws://127.0.0.1:5059/call-api"


@pytest.fixture
def reactor() -> Any:
    """The reactor pytest-twisted runs (kept local: no shared conftest)."""
    from twisted.internet import reactor as global_reactor

    return global_reactor


# -- message builders ------------------------------------------------------


def started(cmd_id: str = "c1", request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"cmd_id": cmd_id, "event": "Started"}}


def note(event: str, data: Any = None, cmd_id: str = "c1", method: str = "Echo") -> dict[str, Any]:
    params: dict[str, Any] = {"cmd_id": cmd_id, "event": event}
    if data is not None:
        params["data"] = data
    return {"jsonrpc": "2.0", "method": method, "params": params}


def rpc_error(code: int, message: str, data: Any = None, request_id: Any = 1) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class Recorder:
    """A L{CommandSession} with its output captured in lists."""

    def __init__(self, **kwargs: Any) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.session = CommandSession(
            URL,
            kwargs.pop("method", "Echo"),
            kwargs.pop("params", {}),
            out=self.out.append,
            err=self.err.append,
            **kwargs,
        )

    def feed(self, *messages: Any) -> int | None:
        code = None
        for message in messages:
            frame = message if isinstance(message, (str, bytes)) else json.dumps(message)
            code = self.session.received(frame)
        return code


# -- pure logic --------------------------------------------------------------


def test_request_frame() -> None:
    rec = Recorder(method="CallStart", params={"caller": "sip:a@x", "n": 2, "cmd_id": "k"})
    assert json.loads(rec.session.request()) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "CallStart",
        "params": {"caller": "sip:a@x", "n": 2, "cmd_id": "k"},
    }


def test_success_prints_events_and_exits_0() -> None:
    rec = Recorder()
    assert rec.feed(started()) is None
    assert rec.session.cmd_id == "c1"
    assert rec.feed(note("Reply", {"a": "é", "n": [1, 2]})) is None
    assert rec.feed(note("Ended")) == EXIT_OK
    assert rec.session.exit_code == EXIT_OK
    assert rec.out == ['Started {"cmd_id":"c1"}', 'Reply {"a":"é","n":[1,2]}', "Ended"]
    assert rec.err == []


def test_error_then_ended_exits_1() -> None:
    rec = Recorder()
    code = rec.feed(started(), note("Error", "404 Dialog not found"), note("Ended"))
    assert code == EXIT_COMMAND_FAILED
    assert rec.out == ['Started {"cmd_id":"c1"}', 'Error "404 Dialog not found"', "Ended"]


def test_quiet_prints_nothing_but_the_error_reason() -> None:
    rec = Recorder(quiet=True)
    code = rec.feed(started(), note("Reply", {}), note("Error", "486 Busy Here"), note("Ended"))
    assert code == EXIT_COMMAND_FAILED
    assert rec.out == []
    assert rec.err == ["callapi-client: Error: 486 Busy Here"]


def test_json_output_prints_raw_messages() -> None:
    rec = Recorder(json_output=True)
    messages = [started(), note("Reply", {"x": 1}), note("Ended")]
    assert rec.feed(*messages) == EXIT_OK
    assert [json.loads(line) for line in rec.out] == messages
    assert all("\n" not in line for line in rec.out)


def test_jsonrpc_error_exits_2_with_code_message_data() -> None:
    rec = Recorder()
    code = rec.feed(rpc_error(-32602, "Invalid params", {"missing": ["caller"]}))
    assert code == EXIT_ERROR
    assert rec.out == []
    assert rec.err == ['callapi-client: JSON-RPC error -32602: Invalid params (data: {"missing":["caller"]})']


def test_jsonrpc_error_with_null_id_is_ours() -> None:
    rec = Recorder(json_output=True)
    message = rpc_error(-32700, "Parse error", request_id=None)
    assert rec.feed(message) == EXIT_ERROR
    assert [json.loads(line) for line in rec.out] == [message]
    assert rec.err == ["callapi-client: JSON-RPC error -32700: Parse error"]


@pytest.mark.parametrize(
    "frame",
    [b"not json", b"\xff\xfe", '{"jsonrpc": "2.0", ', '{"x": NaN}'],
)
def test_unparsable_frame_exits_2(frame: Any) -> None:
    rec = Recorder()
    assert rec.feed(frame) == EXIT_ERROR
    assert len(rec.err) == 1 and rec.err[0].startswith("callapi-client: unparsable frame from server")


@pytest.mark.parametrize(
    "message",
    [
        [started()],  # a batch we never asked for
        42,
        {"jsonrpc": "2.0"},
        started(request_id=2),
        started(request_id=True),  # True == 1 in Python, but not in JSON
        {"jsonrpc": "2.0", "id": 1, "result": {"cmd_id": "c1", "event": "Ended"}},
        {"jsonrpc": "2.0", "id": 1, "result": "Started"},
        rpc_error(-32000, "x", request_id=7),
        {"jsonrpc": "2.0", "method": "Echo", "params": ["c1", "Ended"]},
    ],
)
def test_unexpected_message_exits_2(message: Any) -> None:
    rec = Recorder()
    assert rec.feed(message) == EXIT_ERROR
    assert len(rec.err) == 1 and rec.err[0].startswith("callapi-client: unexpected message from server")


def test_second_started_is_unexpected() -> None:
    rec = Recorder()
    assert rec.feed(started(), started()) == EXIT_ERROR


def test_status_key_is_accepted_for_started() -> None:
    rec = Recorder()
    rec.feed({"jsonrpc": "2.0", "id": 1, "result": {"cmd_id": "c9", "status": "Started"}})
    assert rec.out == ['Started {"cmd_id":"c9"}']


def test_other_commands_are_ignored() -> None:
    rec = Recorder()
    code = rec.feed(started(), note("Error", "x", cmd_id="other"), note("Ended", cmd_id="other"))
    assert code is None
    assert rec.feed(note("Ended")) == EXIT_OK
    assert rec.out == ['Started {"cmd_id":"c1"}', "Ended"]


def test_notifications_before_started_are_replayed_after_it() -> None:
    rec = Recorder()
    assert rec.feed(note("Reply", {"a": 1}), note("Ended", cmd_id="other"), note("Ended")) is None
    assert rec.out == []
    assert rec.feed(started()) == EXIT_OK
    assert rec.out == ['Started {"cmd_id":"c1"}', 'Reply {"a":1}', "Ended"]


def test_terminal_state_absorbs_late_inputs() -> None:
    rec = Recorder()
    rec.feed(started(), note("Ended"))
    assert rec.feed(note("Error", "late"), "garbage") == EXIT_OK
    assert rec.session.connection_closed(1000, "bye") == EXIT_OK
    assert rec.session.timed_out(1) == EXIT_OK
    assert rec.session.connection_failed("x") == EXIT_OK
    assert rec.out == ['Started {"cmd_id":"c1"}', "Ended"]
    assert rec.err == []


def test_close_before_ended() -> None:
    rec = Recorder()
    rec.session.request()
    rec.feed(started())
    assert rec.session.connection_closed(1001, "going away") == EXIT_ERROR
    assert rec.err == ["callapi-client: server closed the connection before Ended (code 1001: going away)"]


def test_close_before_response() -> None:
    rec = Recorder()
    rec.session.request()
    assert rec.session.connection_closed() == EXIT_ERROR
    assert rec.err == ["callapi-client: server closed the connection before a response"]


@pytest.mark.parametrize(
    "opened, started_, expected",
    [
        (False, False, "timed out after 2.5 seconds connecting to " + URL),
        (True, False, "timed out after 2.5 seconds waiting for the response"),
        (True, True, "timed out after 2.5 seconds waiting for Ended"),
    ],
)
def test_timeout_message(opened: bool, started_: bool, expected: str) -> None:
    rec = Recorder()
    if opened:
        rec.session.request()
    if started_:
        rec.feed(started())
    assert rec.session.timed_out(2.5) == EXIT_ERROR
    assert rec.err == [f"callapi-client: {expected}"]


def test_connection_and_handshake_failures() -> None:
    rec = Recorder()
    assert rec.session.connection_failed("Connection refused") == EXIT_ERROR
    assert rec.err == [f"callapi-client: cannot connect to {URL}: Connection refused"]
    rec = Recorder()
    assert rec.session.handshake_failed("status 404") == EXIT_ERROR
    assert rec.err == [f"callapi-client: WebSocket handshake with {URL} failed: status 404"]


# -- argument parsing --------------------------------------------------------


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("a=b", ("a", "b")),
        ("a=", ("a", "")),
        ("a=b=c", ("a", "b=c")),
        ("uri=sip:x@y;a:=b", ("uri", "sip:x@y;a:=b")),
        ("n:=5", ("n", 5)),
        ("n:=-1.5", ("n", -1.5)),
        ('s:="5"', ("s", "5")),
        ("f:=true", ("f", True)),
        ("z:=null", ("z", None)),
        ('o:={"a":[1,{"b":2}]}', ("o", {"a": [1, {"b": 2}]})),
        ("big:=123456789012345678901234567890", ("big", 123456789012345678901234567890)),
        ("a:b=c", ("a:b", "c")),
    ],
)
def test_parse_pair(arg: str, expected: tuple[str, Any]) -> None:
    assert parse_pair(arg) == expected


@pytest.mark.parametrize(
    "arg, fragment",
    [
        ("novalue", "expected key=value or key:=JSON"),
        ("=x", "empty key"),
        (":=1", "empty key"),
        ("n:=", "value is not JSON"),
        ("n:=abc", "value is not JSON"),
        ("n:=NaN", "value is not JSON"),
        ("n:={'a':1}", "value is not JSON"),
    ],
)
def test_parse_pair_rejects(arg: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_pair(arg)


def test_parse_params_duplicates_and_cmd_id() -> None:
    assert parse_params(["a=1", "b:=2"], "k") == {"a": "1", "b": 2, "cmd_id": "k"}
    assert parse_params(["cmd_id=k"]) == {"cmd_id": "k"}
    with pytest.raises(UsageError, match="given twice"):
        parse_params(["a=1", "a:=1"])
    with pytest.raises(UsageError, match="cmd_id given both"):
        parse_params(["cmd_id=x"], "y")


def test_parse_args_defaults() -> None:
    assert parse_args(["Echo"]) == ClientOptions(method="Echo")
    assert ClientOptions(method="Echo").url == URL
    assert ClientOptions(method="Echo").timeout == 300


def test_parse_args_everything_intermixed() -> None:
    options = parse_args(
        [
            "--url",
            "ws://h:1/p",
            "CallStart",
            "caller=sip:a@x",
            "--timeout",
            "1.5",
            "n:=2",
            "--cmd-id",
            "k",
            "--json",
        ]
    )
    assert options == ClientOptions(
        method="CallStart",
        params={"caller": "sip:a@x", "n": 2, "cmd_id": "k"},
        url="ws://h:1/p",
        timeout=1.5,
        json_output=True,
    )
    assert parse_args(["-q", "Echo"]).quiet


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "required: METHOD"),
        (["--timeout", "0", "Echo"], "positive number of seconds"),
        (["--timeout", "inf", "Echo"], "positive number of seconds"),
        (["--timeout", "soon", "Echo"], "not a number of seconds"),
        (["--cmd-id", "", "Echo"], "--cmd-id must not be empty"),
        (["--quiet", "--json", "Echo"], "not allowed with"),
        (["--frobnicate", "Echo"], "unrecognized arguments"),
        (["Echo", "x"], "bad parameter 'x'"),
    ],
)
def test_parse_args_rejects(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_args(argv)


def test_main_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["Echo", "a=1", "oops"])
    assert exc.value.code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "callapi-client: error: bad parameter 'oops': expected key=value or key:=JSON (see --help)\n"
    )


def test_module_help_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callapi.cli.client", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: callapi-client")
    assert "key:=JSON" in proc.stdout


# -- end to end over loopback --------------------------------------------------

CLOSE = object()  # script action: WebSocket close handshake
DROP = object()  # script action: drop TCP without a close frame

Script = Callable[[dict[str, Any]], Iterable[Any]]


class ScriptedServerProtocol(WebSocketServerProtocol):
    """Answers each request with the frames its factory's script yields."""

    factory: ScriptedServerFactory

    def onConnect(self, request: Any) -> None:
        if self.factory.deny:
            raise ConnectionDeny(404, "no such endpoint")

    def connectionMade(self) -> None:
        super().connectionMade()
        self.gone: Deferred[None] = Deferred()
        self.factory.connections.append(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        request = json.loads(payload)
        self.factory.requests.append(request)
        for action in self.factory.script(request):
            if action is CLOSE:
                self.sendClose(1000, "bye")
            elif action is DROP:
                assert self.transport is not None
                cast(ITCPTransport, self.transport).abortConnection()  # a TCP connection
            elif isinstance(action, bytes):
                self.sendMessage(action, isBinary=False)
            else:
                self.sendMessage(json.dumps(action).encode(), isBinary=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closes.append((wasClean, code))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.gone.callback(None)


class ScriptedServerFactory(WebSocketServerFactory):
    def __init__(self, reactor: Any, script: Script, deny: bool = False) -> None:
        super().__init__("ws://127.0.0.1/call-api", reactor=reactor)
        self.protocol = ScriptedServerProtocol
        self.script = script
        self.deny = deny
        self.requests: list[dict[str, Any]] = []
        self.connections: list[ScriptedServerProtocol] = []
        self.closes: list[tuple[bool, int | None]] = []


async def run_against(
    reactor: Any, script: Script, *argv: str, deny: bool = False
) -> tuple[int, ScriptedServerFactory]:
    """Serve ``script`` on a loopback port 0, run the client, clean up."""
    factory = ScriptedServerFactory(reactor, script, deny=deny)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        url = f"ws://127.0.0.1:{port.getHost().port}/call-api"
        code = await run(reactor, parse_args(["--url", url, *argv]))
        # run() returns once its side is gone; wait for the server's side too.
        await gatherResults([c.gone for c in factory.connections])
    finally:
        await port.stopListening()
    return code, factory


def echo_script(request: dict[str, Any]) -> list[Any]:
    cmd_id = request["params"].get("cmd_id", "srv-1")
    return [
        started(cmd_id, request["id"]),
        note("Reply", request["params"], cmd_id),
        note("Ended", cmd_id=cmd_id),
    ]


@pytest_twisted.ensureDeferred
async def test_e2e_success(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, server = await run_against(reactor, echo_script, "Echo", "a=1", "n:=2", "--cmd-id", "c1")
    assert code == EXIT_OK
    assert server.requests == [
        {"jsonrpc": "2.0", "id": 1, "method": "Echo", "params": {"a": "1", "n": 2, "cmd_id": "c1"}}
    ]
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        'Started {"cmd_id":"c1"}',
        'Reply {"a":"1","n":2,"cmd_id":"c1"}',
        "Ended",
    ]
    assert captured.err == ""
    assert server.closes == [(True, 1000)]  # the client closed cleanly


@pytest_twisted.ensureDeferred
async def test_e2e_json_output(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await run_against(reactor, echo_script, "--json", "Echo")
    assert code == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        started("srv-1"),
        note("Reply", {}, "srv-1"),
        note("Ended", cmd_id="srv-1"),
    ]


@pytest_twisted.ensureDeferred
async def test_e2e_error_then_ended(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    def script(request: dict[str, Any]) -> list[Any]:
        return [
            started("c7"),
            note("Error", "404 Dialog not found", "c7", "CallEnd"),
            note("Ended", cmd_id="c7", method="CallEnd"),
        ]

    code, _ = await run_against(reactor, script, "CallEnd", "callid=abc")
    assert code == EXIT_COMMAND_FAILED
    assert capsys.readouterr().out.splitlines() == [
        'Started {"cmd_id":"c7"}',
        'Error "404 Dialog not found"',
        "Ended",
    ]


@pytest_twisted.ensureDeferred
async def test_e2e_jsonrpc_error(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    def script(request: dict[str, Any]) -> list[Any]:
        return [rpc_error(-32601, "Method not found", "Nope", request["id"])]

    code, _ = await run_against(reactor, script, "Nope")
    assert code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == 'callapi-client: JSON-RPC error -32601: Method not found (data: "Nope")\n'


@pytest_twisted.ensureDeferred
async def test_e2e_server_closes_before_ended(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await run_against(reactor, lambda request: [started(), CLOSE], "Echo")
    assert code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == 'Started {"cmd_id":"c1"}\n'
    assert captured.err == "callapi-client: server closed the connection before Ended (code 1000: bye)\n"


@pytest_twisted.ensureDeferred
async def test_e2e_server_drops_tcp(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await run_against(reactor, lambda request: [DROP], "Echo")
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == (
        "callapi-client: server closed the connection before a response (code 1006: "
        "peer dropped the TCP connection without previous WebSocket closing handshake)\n"
    )


@pytest_twisted.ensureDeferred
async def test_e2e_unparsable_frame(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, server = await run_against(reactor, lambda request: [b"<html>"], "Echo")
    assert code == EXIT_ERROR
    assert capsys.readouterr().err.startswith("callapi-client: unparsable frame from server")
    assert server.closes == [(True, 1000)]


@pytest_twisted.ensureDeferred
async def test_e2e_timeout(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, server = await run_against(reactor, lambda request: [started()], "--timeout", "0.3", "Echo")
    assert code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == 'Started {"cmd_id":"c1"}\n'
    assert captured.err == "callapi-client: timed out after 0.3 seconds waiting for Ended\n"
    assert server.closes == [(True, 1000)]


@pytest_twisted.ensureDeferred
async def test_e2e_handshake_denied(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, server = await run_against(reactor, lambda request: [], "Echo", deny=True)
    assert code == EXIT_ERROR
    assert server.requests == []
    err = capsys.readouterr().err
    assert err.startswith("callapi-client: WebSocket handshake with ws://127.0.0.1:")
    assert err.endswith("/call-api failed: WebSocket connection upgrade failed [404]: no such endpoint\n")


@pytest_twisted.ensureDeferred
async def test_e2e_timeout_during_handshake(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A peer that accepts TCP but never answers the opening handshake."""
    gone: Deferred[None] = Deferred()

    class Mute(Protocol):
        def connectionLost(self, reason: Failure = connectionDone) -> None:
            gone.callback(None)

    port = reactor.listenTCP(0, ServerFactory.forProtocol(Mute), interface="127.0.0.1")
    try:
        url = f"ws://127.0.0.1:{port.getHost().port}/call-api"
        code = await run(reactor, parse_args(["--url", url, "--timeout", "0.2", "Echo"]))
        await gone  # the client aborted; the server side is closed too
    finally:
        await port.stopListening()
    assert code == EXIT_ERROR
    assert capsys.readouterr().err == f"callapi-client: timed out after 0.2 seconds connecting to {url}\n"


@pytest_twisted.ensureDeferred
async def test_e2e_connection_refused(reactor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    port = reactor.listenTCP(0, ScriptedServerFactory(reactor, echo_script), interface="127.0.0.1")
    number = port.getHost().port
    await port.stopListening()
    code = await run(reactor, parse_args(["--url", f"ws://127.0.0.1:{number}/call-api", "Echo"]))
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"callapi-client: cannot connect to ws://127.0.0.1:{number}/call-api: ")
    assert "refused" in err and err.count("\n") == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "ws://127.0.0.1:notaport/", "ws:///nohost"])
@pytest_twisted.ensureDeferred
async def test_e2e_bad_url(reactor: Any, capsys: pytest.CaptureFixture[str], url: str) -> None:
    code = await run(reactor, parse_args(["--url", url, "Echo"]))
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"callapi-client: cannot connect to {url}: ")
    assert err.count("\n") == 1
