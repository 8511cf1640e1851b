"""
``callapi-cmd`` (L{callapi.cli.cmd}): one command straight against OpenSIPS.

The core coroutine L{callapi.cli.cmd.run} is run against the OpenSIPS emulator on
loopback (port 0, C{delay_scale=0}); every test checks the printed lines,
the exit code and that the cmd's event socket ended unsubscribed
(C{expire 0} for every event it had subscribed).  A few tests run the real
console entry point in a subprocess (C{python -m callapi.cli.cmd}): usage errors,
C{--help}, a whole run, and SIGINT in the middle of a command.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol

from callapi.cli.client import UsageError
from callapi.cli.cmd import (
    EXIT_COMMAND_FAILED,
    EXIT_ERROR,
    EXIT_OK,
    CmdOptions,
    main,
    parse_args,
    run,
)
from callapi.emulator import start_emulator
from callapi.opensips.subscriptions import EVENTS

REPO = Path(__file__).resolve().parent.parent


async def until(reactor: Any, predicate: Any, timeout: float = 5.0) -> None:
    """Wait (yielding to the reactor) until C{predicate()}; fail after C{timeout} s."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        d: Deferred[None] = Deferred()
        reactor.callLater(0.005, d.callback, None)
        await d
        waited += 0.005


class Emulator:
    """A started emulator plus helpers to run the cmd against it."""

    def __init__(self, reactor: Any, delay_scale: float = 0) -> None:
        self.reactor = reactor
        self.running = start_emulator(reactor, delay_scale=delay_scale)
        self.emu = self.running.emulator
        host, port = self.running.mi_address
        self.mi = f"udp:{host}:{port}"
        self.sockets: list[str] = []

    async def call(self) -> str:
        callid = self.emu.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")
        await until(self.reactor, lambda: self.emu.dialogs[callid].state == 4)
        return callid

    async def cmd(
        self, method: str, params: dict[str, Any] | None = None, **options: Any
    ) -> tuple[int, list[str], list[str]]:
        """Run the cmd's core coroutine; return (exit code, stdout lines, stderr lines)."""
        out, err = io.StringIO(), io.StringIO()
        options.setdefault("mi", self.mi)
        options.setdefault("mi_timeout", 2.0)
        options.setdefault("timeout", 10.0)
        code = await run(
            self.reactor,
            CmdOptions(method=method, params=params or {}, **options),
            stdout=out,
            stderr=err,
            on_service=lambda service: self.sockets.append(service.event_socket),
        )
        return code, out.getvalue().splitlines(), err.getvalue().splitlines()

    def expires(self, socket: str) -> dict[str, int]:
        return {event: info.expire for (event, s), info in self.emu.subscribers.items() if s == socket}

    def assert_unsubscribed(self) -> None:
        """Every socket a cmd used is subscribed to the three events with expire 0."""
        assert self.sockets, "the cmd never started its OpenSIPS service"
        for socket in self.sockets:
            assert self.expires(socket) == dict.fromkeys(EVENTS, 0), socket


@pytest.fixture
def emulator(reactor: Any) -> Any:
    started = Emulator(reactor)
    yield started
    pytest_twisted.blockon(started.running.stop())


@pytest_twisted.ensureDeferred
async def test_echo(emulator: Emulator) -> None:
    code, out, err = await emulator.cmd("Echo", {"hello": ["world", 1], "cmd_id": "e1"})
    assert (code, err) == (EXIT_OK, [])
    assert out == ['Started {"cmd_id":"e1"}', 'Reply {"hello":["world",1]}', "Ended"]
    emulator.assert_unsubscribed()


@pytest_twisted.ensureDeferred
async def test_echo_json_output(emulator: Emulator) -> None:
    code, out, _ = await emulator.cmd("Echo", {"a": "1", "cmd_id": "j1"}, json_output=True)
    assert code == EXIT_OK
    assert [json.loads(line) for line in out] == [
        {"jsonrpc": "2.0", "id": 1, "result": {"cmd_id": "j1", "event": "Started"}},
        {
            "jsonrpc": "2.0",
            "method": "Echo",
            "params": {"cmd_id": "j1", "event": "Reply", "data": {"a": "1"}},
        },
        {"jsonrpc": "2.0", "method": "Echo", "params": {"cmd_id": "j1", "event": "Ended"}},
    ]


@pytest_twisted.ensureDeferred
async def test_call_hold_prints_the_events(emulator: Emulator) -> None:
    callid = await emulator.call()
    code, out, err = await emulator.cmd("CallHold", {"callid": callid, "cmd_id": "h1"})
    assert (code, err) == (EXIT_OK, [])
    assert out == [
        'Started {"cmd_id":"h1"}',
        "CallHolding",
        'CallHoldStart {"leg":"caller"}',
        'CallHoldStart {"leg":"callee"}',
        'CallHoldSuccessful {"leg":"caller"}',
        'CallHoldSuccessful {"leg":"callee"}',
        "Ended",
    ]
    assert emulator.emu.dialogs[callid].held == frozenset({"caller", "callee"})
    emulator.assert_unsubscribed()


@pytest_twisted.ensureDeferred
async def test_call_hold_unknown_callid_exits_1(emulator: Emulator) -> None:
    code, out, err = await emulator.cmd("CallHold", {"callid": "no-such-call@x", "cmd_id": "u1"})
    assert code == EXIT_COMMAND_FAILED
    assert out == ['Started {"cmd_id":"u1"}', 'Error "404 Dialog not found"', "Ended"]
    assert err == []
    emulator.assert_unsubscribed()


@pytest_twisted.ensureDeferred
async def test_quiet_error_goes_to_stderr(emulator: Emulator) -> None:
    code, out, err = await emulator.cmd("CallHold", {"callid": "nope"}, quiet=True)
    assert (code, out) == (EXIT_COMMAND_FAILED, [])
    assert err == ["callapi-cmd: Error: 404 Dialog not found"]


@pytest_twisted.ensureDeferred
async def test_bad_params_is_a_jsonrpc_error_exit_2(emulator: Emulator) -> None:
    code, out, err = await emulator.cmd("CallHold", {"callid": "a\r\nVia: evil"})
    assert (code, out) == (EXIT_ERROR, [])
    assert len(err) == 1
    assert err[0].startswith("callapi-cmd: JSON-RPC error -32602: Invalid params (data: ")
    code, out, err = await emulator.cmd("CallHold", {})
    assert (code, out) == (EXIT_ERROR, [])
    assert err == ['callapi-cmd: JSON-RPC error -32602: Invalid params (data: "missing parameter callid")']
    code, _, err = await emulator.cmd("callhold", {"callid": "x"})
    assert code == EXIT_ERROR
    assert err == ['callapi-cmd: JSON-RPC error -32601: Method not found (data: "callhold")']
    emulator.assert_unsubscribed()


@pytest_twisted.ensureDeferred
async def test_unreachable_mi_exits_2_naming_the_timeout(reactor: Any) -> None:
    """
    Nothing answers MI: the run ends after the C{which} probe and the
    subscriptions timed out (2 x --mi-timeout), exit 2, the line names the
    MI timeout; the cmd still tried to unsubscribe.
    """
    silent = reactor.listenUDP(0, _Recorder(), interface="127.0.0.1")
    try:
        out, err = io.StringIO(), io.StringIO()
        mi = f"udp:127.0.0.1:{silent.getHost().port}"
        started = reactor.seconds()
        code = await run(
            reactor,
            CmdOptions(method="CallHold", params={"callid": "abc"}, mi=mi, mi_timeout=0.2, timeout=30),
            stdout=out,
            stderr=err,
        )
        assert code == EXIT_ERROR
        assert out.getvalue() == ""
        lines = err.getvalue().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(
            f"callapi-cmd: cannot connect to OpenSIPS MI {mi}: cannot subscribe to E_CALL_TRANSFER: "
        )
        # no event_subscribe when `which` got no answer (it would only time out too)
        assert lines[0].endswith("OpenSIPS did not answer MI which within 0.2 s")
        assert reactor.seconds() - started < 5
        methods = [json.loads(d)["method"] for d in silent.protocol.datagrams]
        assert "call_hold" not in methods  # the command never started
        unsubscribes = [
            json.loads(d)["params"]
            for d in silent.protocol.datagrams
            if json.loads(d)["method"] == "event_subscribe" and json.loads(d)["params"]["expire"] == 0
        ]
        # idempotent: each sent 3 times (2 retries within the 2 s shutdown bound)
        assert sorted(p["event"] for p in unsubscribes) == sorted(EVENTS * 3)
    finally:
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_nothing_listening_on_mi_exits_2(reactor: Any) -> None:
    """
    Nothing listens on the MI port: exit 2 with one line, at once or after
    the MI timeout.  (Today the ICMP port unreachable makes the epoll reactor
    close OpenSIPSService's connected MI socket, so the line says "MI socket
    is not running" rather than naming the timeout; see the report on
    connection.py.)
    """
    probe = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    port = probe.getHost().port
    await probe.stopListening()
    err = io.StringIO()
    code = await run(
        reactor,
        CmdOptions(method="Echo", mi=f"udp:127.0.0.1:{port}", mi_timeout=0.1, timeout=30),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == EXIT_ERROR
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"callapi-cmd: cannot connect to OpenSIPS MI udp:127.0.0.1:{port}: "
        "cannot subscribe to E_CALL_TRANSFER: "
    )
    assert "within 0.1 s" in lines[0] or "not available" in lines[0]


@pytest_twisted.ensureDeferred
async def test_timeout_aborts_the_command_and_unsubscribes(reactor: Any) -> None:
    """
    --timeout while a CallStart rings (real-time emulator: noanswer rings for
    fr_inv_timeout): exit 2 with the client's timeout line, the command is
    aborted (the INVITE is left to OpenSIPS, as the daemon does when a client
    disconnects), the subscriptions are removed.
    """
    emulator = Emulator(reactor, delay_scale=1)
    try:
        code, out, err = await emulator.cmd(
            "CallStart",
            {"caller": "sip:noanswer@127.0.0.1", "callee": "sip:bob@127.0.0.1", "cmd_id": "t1"},
            timeout=0.3,
        )
        assert code == EXIT_ERROR
        assert len(out) == 1 and json.loads(out[0][len("Started ") :])["cmd_id"] == "t1"
        assert err == ["callapi-cmd: timed out after 0.3 seconds waiting for Ended"]
        emulator.assert_unsubscribed()
    finally:
        await emulator.running.stop()


@pytest_twisted.ensureDeferred
async def test_event_socket_cannot_be_bound_exits_2(emulator: Emulator) -> None:
    code, out, err = await emulator.cmd("Echo", {}, events="udp:192.0.2.1:0")
    assert (code, out) == (EXIT_ERROR, [])
    assert len(err) == 1
    assert err[0].startswith(f"callapi-cmd: cannot connect to OpenSIPS MI {emulator.mi}: ")
    assert "192.0.2.1" in err[0]
    assert emulator.emu.subscribers == {}


@pytest_twisted.ensureDeferred
async def test_unix_event_socket(emulator: Emulator, tmp_path: Path) -> None:
    path = str(tmp_path / "events.sock")
    callid = await emulator.call()
    code, out, _ = await emulator.cmd("CallHold", {"callid": callid}, events=f"unix:{path}")
    assert code == EXIT_OK
    assert out[-1] == "Ended"
    assert emulator.sockets == [f"unix:{path}"]
    emulator.assert_unsubscribed()


# -- command line --------------------------------------------------------------


def test_parse_args_defaults_and_options() -> None:
    options = parse_args(["CallHold", "callid=abc"])
    assert options == CmdOptions(method="CallHold", params={"callid": "abc"})
    assert (options.mi, options.events, options.timeout, options.mi_timeout) == (
        "udp:127.0.0.1:8080",
        None,
        300.0,
        5.0,
    )
    options = parse_args(
        [
            "--json",
            "CallStart",
            "caller=sip:a@h",
            "--mi",
            "unix:/run/mi.sock",
            "ring_timeout:=30",
            "--events",
            "udp:127.0.0.1:0",
            "--mi-timeout",
            "0.5",
            "--timeout",
            "9",
            "--cmd-id",
            "c9",
            "--sip-uri",
            "sip:127.0.0.1:5060",
        ]
    )
    assert options == CmdOptions(
        method="CallStart",
        params={"caller": "sip:a@h", "ring_timeout": 30, "cmd_id": "c9"},
        mi="unix:/run/mi.sock",
        events="udp:127.0.0.1:0",
        mi_timeout=0.5,
        timeout=9.0,
        sip_uri="sip:127.0.0.1:5060",
        json_output=True,
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "METHOD"),
        (["--mi", "tcp:1.2.3.4:8080", "Echo"], "--mi"),
        (["--mi", "udp:127.0.0.1:0", "Echo"], "invalid port"),
        (["--events", "nonsense", "Echo"], "--events"),
        (["--mi-timeout", "0", "Echo"], "positive"),
        (["--timeout", "nan", "Echo"], "positive"),
        (["--sip-uri", "http://x", "Echo"], "--sip-uri"),
        (["--quiet", "--json", "Echo"], "not allowed"),
        (["--cmd-id", "", "Echo"], "--cmd-id"),
        (["Echo", "novalue"], "key=value"),
        (["--url", "ws://x", "Echo"], "unrecognized"),
    ],
)
def test_parse_args_rejects(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse_args(argv)
    assert fragment in str(info.value)


def test_main_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--mi", "bogus", "Echo"])
    assert info.value.code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith("callapi-cmd: error: --mi: ")


def test_module_help_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "callapi.cli.cmd", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: callapi-cmd")
    assert "--mi-timeout" in proc.stdout


class _Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.datagrams.append(datagram)


class _Child(ProcessProtocol):
    """Collects a child's output; C{ended} fires with its exit code."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()
        self.started: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if b"Started" in self.out and not self.started.called:
            self.started.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def _spawn(reactor: Any, *argv: str) -> _Child:
    child = _Child()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    reactor.spawnProcess(
        child, sys.executable, [sys.executable, "-m", "callapi.cli.cmd", *argv], env=env, path=str(REPO)
    )
    return child


@pytest_twisted.ensureDeferred
async def test_console_script_end_to_end(emulator: Emulator) -> None:
    callid = await emulator.call()
    child = _spawn(emulator.reactor, "--mi", emulator.mi, "CallHold", f"callid={callid}", "--cmd-id", "p1")
    code = await child.ended
    assert code == EXIT_OK, child.err
    assert child.out.decode().splitlines()[0] == 'Started {"cmd_id":"p1"}'
    assert child.out.decode().splitlines()[-1] == "Ended"
    sockets = {s for (_, s) in emulator.emu.subscribers}
    assert len(sockets) == 1
    emulator.sockets.extend(sockets)
    emulator.assert_unsubscribed()


@pytest_twisted.ensureDeferred
async def test_sigint_mid_command_unsubscribes_and_exits_2(reactor: Any) -> None:
    """
    Ctrl-C while a CallStart rings (real-time emulator: noanswer rings for
    fr_inv_timeout): one line on stderr, exit 2, and the reactor shutdown
    waited for the unsubscription.
    """
    emulator = Emulator(reactor, delay_scale=1)
    try:
        child = _spawn(
            reactor,
            "--mi",
            emulator.mi,
            "CallStart",
            "caller=sip:noanswer@127.0.0.1",
            "callee=sip:bob@127.0.0.1",
        )
        await child.started
        os.kill(child_pid(child), signal.SIGINT)
        code = await child.ended
        assert code == EXIT_ERROR, (child.out, child.err)
        assert child.out.decode().splitlines()[0].startswith("Started ")
        assert child.err.decode().splitlines() == ["callapi-cmd: interrupted before Ended; stopping"]
        sockets = {s for (_, s) in emulator.emu.subscribers}
        assert len(sockets) == 1
        emulator.sockets.extend(sockets)
        emulator.assert_unsubscribed()
    finally:
        await emulator.running.stop()


def child_pid(child: _Child) -> int:
    transport = child.transport
    assert transport is not None and transport.pid is not None
    return int(transport.pid)
