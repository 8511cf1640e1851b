"""
End-to-end with faults on (issue 7, "Done means"): the real daemon against
the OpenSIPS emulator over loopback sockets, with lost MI datagrams each
way, lost events and some NOTIFY races (the mixed run), an OpenSIPS
restart, the baresip NOTIFY race on every transfer, a callee that never
answers and a CallEnd while the caller rings.

The mixed run sends C{CALLAPI_E2E_FAULT_COMMANDS} commands (default 100 so
that the default suite stays short; the issue's figure is 500:
C{CALLAPI_E2E_FAULT_COMMANDS=500 python -m pytest -q tests/test_e2e_faults.py}).
Every command gets phones of its own (unique users), so the emulator's
dialog table tells which dialogs a command created.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import provider

from callapi.emulator import Faults, Phone
from callapi.testing.daemon import DaemonHarness, start_daemon, until
from callapi.testing.wsclient import CommandResult, JSONRPCClientProtocol

COMMANDS = int(os.environ.get("CALLAPI_E2E_FAULT_COMMANDS", "100"))
CONCURRENCY = 20

# The daemon's timeouts, shortened so that the run is short (seconds).
MI_TIMEOUT = 0.5
RING = 1.5
CALLEE_RING = 1.5
START_TIMEOUT = 1.5
TRANSFER_TIMEOUT = 4.0
HOLD_TIMEOUT = 4.0
HANGUP_DEADLINE = 6.0
SHORT = (
    "--mi-timeout",
    str(MI_TIMEOUT),
    "--ring-timeout",
    str(RING),
    "--callee-ring-timeout",
    str(CALLEE_RING),
    "--transfer-start-timeout",
    str(START_TIMEOUT),
    "--transfer-timeout",
    str(TRANSFER_TIMEOUT),
    "--hold-timeout",
    str(HOLD_TIMEOUT),
    "--hangup-deadline",
    str(HANGUP_DEADLINE),
)
#: One cleanup: its deadline plus one more attempt (resolve + dlg_end_dlg).
CLEANUP = HANGUP_DEADLINE + 3 * MI_TIMEOUT
#: docs/protocol.md "Timeouts at a glance", with the options above: the
#: longest chain of waits each command may go through (seconds).
BOUNDS = {
    "CallEnd": 2 * MI_TIMEOUT + CLEANUP,
    "CallHold": HOLD_TIMEOUT + 2 * MI_TIMEOUT,
    "CallUnhold": HOLD_TIMEOUT + 2 * MI_TIMEOUT,
    "CallBlindTransfer": 4 * MI_TIMEOUT + START_TIMEOUT + 2 + TRANSFER_TIMEOUT + CLEANUP,
    # INVITE reply (ring + 10), confirmation 2, call_transfer retries,
    # start, outcome, then the cleanups of both calls
    "CallStart": (RING + 10) + 2 + 4 * MI_TIMEOUT + START_TIMEOUT + 2 + TRANSFER_TIMEOUT + 2 * CLEANUP,
}


def user(n: int, role: str) -> str:
    return f"sip:u{n}{role}@127.0.0.1"


@attrs.define
class Seen:
    """
    One notification (or response) and the emulator's dialogs when the
    client received it.
    """

    params: dict[str, Any]
    at: float
    dialogs: dict[str, tuple[int, int, str, str]]  # Call-ID -> (state, timestart, From, To)


class Recorder:
    """
    Wraps a client: each notification is stored with a snapshot of the
    emulator's dialogs taken when it arrived (same process, same reactor:
    the proxy's truth at that moment).
    """

    def __init__(self, daemon: DaemonHarness, client: JSONRPCClientProtocol) -> None:
        self.daemon = daemon
        self.seen: dict[str, list[Seen]] = {}
        original = client.onMessage

        def on_message(payload: bytes, isBinary: bool) -> None:
            import json

            message = json.loads(payload)
            params = message.get("params") if isinstance(message, dict) else None
            if isinstance(params, dict) and "cmd_id" in params and "event" in params:
                self.seen.setdefault(params["cmd_id"], []).append(
                    Seen(params, daemon.reactor.seconds(), self.snapshot())
                )
            original(payload, isBinary)

        client.onMessage = on_message  # type: ignore[method-assign]

    def snapshot(self) -> dict[str, tuple[int, int, str, str]]:
        return {
            d.callid: (d.state, d.timestart, d.caller.uri, d.callee.uri)
            for d in self.daemon.emu.dialogs.values()
        }


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """
    Every twisted.logger event while the test runs.
    """
    events: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


async def stop(daemon: DaemonHarness) -> None:
    await daemon.stop()
    daemon.assert_nothing_left()


def first_calls(daemon: DaemonHarness, caller: str) -> list[Any]:
    """
    CallStart's first dialogs (OpenSIPS -> C{caller}, From C{caller}).
    """
    return [d for d in daemon.emu.dialogs.values() if d.click_to_dial and d.caller.uri == caller]


async def drain(daemon: DaemonHarness) -> None:
    """
    Faults off; wait (bounded) until no command runs and no cleanup is pending.
    """
    daemon.emu.faults = Faults()
    hangups = daemon.runner.ctx.hangups
    await until(
        daemon.reactor,
        lambda: not daemon.runner.running and not hangups.pending,
        timeout=max(BOUNDS.values()) + 5,
    )


# 1. mixed commands at 20 % MI loss each way and random event loss


class Mix:
    """
    The mixed run: jobs of one to four commands on phones of their own.

    @ivar results: (method, cmd_id, params, CommandResult, seconds taken).
    @ivar owned: Call-IDs the client owns (it set them up, or was told
        about them as connected or left up).
    """

    def __init__(self, daemon: DaemonHarness, client: JSONRPCClientProtocol, seed: int) -> None:
        self.daemon = daemon
        self.client = client
        self.recorder = Recorder(daemon, client)
        self.rng = random.Random(seed)
        self.ids = itertools.count(1)
        self.results: list[tuple[str, str, dict[str, Any], CommandResult, float]] = []
        self.owned: set[str] = set()
        self.sent = 0

    async def command(self, method: str, params: dict[str, Any]) -> CommandResult:
        cmd_id = f"m{next(self.ids)}"
        self.sent += 1
        began = self.daemon.reactor.seconds()
        result = await self.client.command(method, params, cmd_id=cmd_id)
        took = self.daemon.reactor.seconds() - began
        self.results.append((method, cmd_id, params, result, took))
        for call in self.calls(result):
            if call.get("state") != "ended":
                self.owned.add(call["callid"])
        return result

    @staticmethod
    def calls(result: CommandResult) -> list[dict[str, Any]]:
        return [c for n in result.notifications if n["event"] == "Error" for c in n.get("calls", [])]

    def phone(self, n: int, role: str, kind: str) -> str:
        uri = user(n, role)
        flavour = {
            "baresip": Phone.baresip(),
            "linphone": Phone.linphone(),
            "busy": Phone.sipp(answer="busy"),
            "noanswer": Phone.sipp(answer="noanswer"),
        }[kind]
        self.daemon.emu.add_phone(uri, flavour)
        return uri

    async def job(self, n: int) -> None:
        kind = self.rng.choice(
            ["start", "start", "start_busy", "start_noanswer", "calls", "calls", "end_ring"]
        )
        transferee = self.rng.choice(["baresip", "linphone"])
        if kind == "start":
            caller = self.phone(n, "a", transferee)
            callee = self.phone(n, "b", self.rng.choice(["baresip", "linphone"]))
            result = await self.command("CallStart", {"caller": caller, "callee": callee})
            new = [d["callid"] for d in result.data("CalleeAnswered")]
            self.owned.update(new)
            if new:
                await self.on_call(n, new[0])
        elif kind == "start_busy":
            caller = self.phone(n, "a", transferee)
            callee = self.phone(n, "b", "busy")
            await self.command("CallStart", {"caller": caller, "callee": callee})
        elif kind == "start_noanswer":
            caller = self.phone(n, "a", transferee)
            callee = self.phone(n, "b", "noanswer")
            await self.command(
                "CallStart", {"caller": caller, "callee": callee, "callee_ring_timeout": CALLEE_RING}
            )
        elif kind == "end_ring":
            caller = self.phone(n, "a", "noanswer")
            callee = self.phone(n, "b", "baresip")
            start = self.client.command(
                "CallStart", {"caller": caller, "callee": callee}, cmd_id=f"m{next(self.ids)}"
            )
            self.sent += 1
            began = self.daemon.reactor.seconds()
            await until(
                self.daemon.reactor, lambda: first_calls(self.daemon, caller) != [] or start.called, timeout=5
            )
            first = first_calls(self.daemon, caller)
            if first:
                await self.command("CallEnd", {"callid": first[0].callid})
            result = await start
            self.results.append(("CallStart", "end_ring", {}, result, self.daemon.reactor.seconds() - began))
        else:
            a = self.phone(n, "a", transferee)
            b = self.phone(n, "b", "baresip")
            callid = self.daemon.emu.add_call(a, b)
            self.owned.add(callid)
            await until(self.daemon.reactor, lambda: self.daemon.emu.dialogs[callid].state == 4)
            await self.on_call(n, callid)

    async def on_call(self, n: int, callid: str) -> None:
        """
        Hold, unhold, maybe a blind transfer, then end what is up.
        """
        await self.command("CallHold", {"callid": callid})
        await self.command("CallUnhold", {"callid": callid})
        live = callid
        if self.rng.random() < 0.5 and self.daemon.emu.dialogs[callid].callee.phone_uri is not None:
            # the callee leg's phone calls a third one; the caller is released
            target = self.phone(n, "c", "baresip")
            result = await self.command(
                "CallBlindTransfer", {"callid": callid, "leg": "callee", "destination": target}
            )
            new = [d["callid"] for d in result.data("TransferSuccessful")]
            self.owned.update(new)
            if new:
                live = new[0]
        await self.command("CallEnd", {"callid": live})


def outcome(result: CommandResult) -> str:
    """
    A short label of how a command ended (the Error text without Call-IDs).
    """
    if result.response is not None and "error" in result.response:
        return f"JSON-RPC {result.response['error']['code']}"
    errors = result.data("Error")
    if errors:
        return (
            "Error: "
            + " ".join(w for w in str(errors[0]).split() if not any(ch.isdigit() for ch in w[4:]))[:90]
        )
    return result.events[-2] if len(result.events) > 1 else "Ended"


def bare(uri: str) -> str:
    """
    A URI without its parameters (a transfer's To carries C{;osid=}).
    """
    return uri.split(";", 1)[0]


def explain(mix: Mix, callid: str) -> str:
    """
    A dialog and the commands of its users (for a failure message).
    """
    dialog = mix.daemon.emu.dialogs[callid]
    users = {bare(dialog.caller.uri), bare(dialog.callee.uri)}
    lines = [f"{callid} {dialog.caller.uri} -> {dialog.callee.uri} state {dialog.state}"]
    for method, cmd_id, params, result, took in mix.results:
        if users & {v for v in params.values() if isinstance(v, str)} or callid in str(params):
            lines.append(
                f"  {method} {cmd_id} {params} {took:.2f} s: {result.response} {result.notifications}"
            )
    return "\n".join(lines)


def check_outcome(
    mix: Mix, method: str, cmd_id: str, params: dict[str, Any], result: CommandResult
) -> list[str]:
    """
    What contradicts the proxy in one command's outcome (empty: nothing):
    a success whose new call was never connected; an Error that says a
    call ended while the proxy has it; an Error after which a call the
    command created (a dialog to its callee or destination: every job has
    users of its own) is still up but not named in C{calls}.
    """
    problems: list[str] = []
    seen = mix.recorder.seen.get(cmd_id, [])
    target = params.get("callee") if method == "CallStart" else params.get("destination")
    for s in seen:
        event = s.params["event"]
        if event in ("CalleeAnswered", "TransferSuccessful"):
            new = s.params["data"]["callid"]
            state = s.dialogs.get(new)
            if state is None or not state[1]:
                problems.append(f"{cmd_id} {event} {new} but the proxy has {state}")
        if event == "Error":
            named = {c["callid"]: c["state"] for c in s.params.get("calls", [])}
            for callid, state in named.items():
                now = s.dialogs.get(callid)
                if state == "ended" and now is not None and now[0] in (1, 2, 3, 4):
                    problems.append(f"{cmd_id} Error says {callid} ended, the proxy has it in {now}")
            for callid, (up_state, _, _, to) in s.dialogs.items():
                if (
                    target is not None
                    and bare(to) == target
                    and up_state in (1, 2, 3, 4)
                    and callid not in named
                ):
                    problems.append(f"{cmd_id} {s.params} but {callid} to {to} is up in state {up_state}")
    return problems


@pytest_twisted.ensureDeferred
async def test_mixed_commands_with_lost_datagrams_and_events(
    reactor: Any, captured: list[dict[str, Any]]
) -> None:
    daemon = await start_daemon(reactor, *SHORT, delay_scale=0.02)
    try:
        client = await daemon.client()
        mix = Mix(daemon, client, seed=7)
        daemon.emu.faults = Faults(
            mi_request_loss=20, mi_reply_loss=20, event_loss=10, notify_race=10, seed=7
        )
        began = reactor.seconds()
        numbers = itertools.count(1)

        async def worker() -> None:
            while mix.sent < COMMANDS:
                await mix.job(next(numbers))

        jobs = [Deferred.fromCoroutine(worker()) for _ in range(CONCURRENCY)]
        await gatherResults(jobs, consumeErrors=True)
        took = reactor.seconds() - began
        counts = dict(daemon.emu.fault_counts)
        await drain(daemon)

        # every command ended within its documented bound
        late = [
            (method, cmd_id, took_s)
            for (method, cmd_id, _, _, took_s) in mix.results
            if took_s > BOUNDS[method]
        ]
        assert late == []
        # exactly one Ended, last (or a JSON-RPC error response)
        for method, cmd_id, _, result, _ in mix.results:
            if "error" in (result.response or {}):
                continue
            assert result.events[-1:] == ["Ended"], (method, cmd_id, result.notifications)
            assert result.events.count("Ended") == 1
        # no outcome contradicts the proxy
        problems = [p for (m, c, a, r, _) in mix.results for p in check_outcome(mix, m, c, a, r)]
        assert problems == []
        # no dialog left that no command or client owns
        orphans = [d for d in daemon.emu.live_dialogs() if d[0] not in mix.owned]
        for callid, _, _ in orphans:
            print(explain(mix, callid))
        assert orphans == []
        # cleanup retries are visible in the log
        retries = [
            e
            for e in captured
            if e.get("log_namespace") == "callapi.opensips.hangup"
            and "retrying in" in e.get("log_format", "")
        ]
        outcomes = Counter((m, outcome(r)) for (m, _, _, r, _) in mix.results)
        print(
            f"\n{mix.sent} commands in {took:.1f} s, faults {counts}, "
            f"cleanup retries logged {len(retries)}, left {len(daemon.emu.live_dialogs())} owned dialogs"
        )
        for key, count in sorted(outcomes.items(), key=str):
            print(f"  {key}: {count}")
        # at 500 commands (CALLAPI_E2E_FAULT_COMMANDS=500) every run saw 8 to 17
        # retries; the default 100 may, by chance, lose no dlg_end_dlg at all
        # (the retry log itself is pinned by tests/test_truthful.py)
        if mix.sent >= 300:
            assert retries != []
        # the client's own calls end too (faults off)
        for callid, _, _ in daemon.emu.live_dialogs():
            end = await client.command("CallEnd", {"callid": callid})
            assert end.events[-1] == "Ended"
        await until(reactor, lambda: daemon.emu.live_dialogs() == [], timeout=5)
    finally:
        await stop(daemon)


# 2. an OpenSIPS restart

ALICE, BOB = "sip:alice@127.0.0.1", "sip:bob@127.0.0.1"
EVENTS = {"E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED"}


def subscribed_events(daemon: DaemonHarness) -> set[str]:
    socket = daemon.opensips.event_socket
    return {event for (event, s) in daemon.emu.subscribers if s == socket}


async def works(daemon: DaemonHarness, client: JSONRPCClientProtocol) -> None:
    """
    A click-to-dial and a hold of its new call succeed (both need MI and
    the events); the call is ended.
    """
    start = await client.command("CallStart", {"caller": ALICE, "callee": BOB})
    assert start.events[-2:] == ["CalleeAnswered", "Ended"], start.notifications
    new = start.data("CalleeAnswered")[0]["callid"]
    hold = await client.command("CallHold", {"callid": new})
    assert hold.events[-2:] == ["CallHoldSuccessful", "Ended"], hold.notifications
    end = await client.command("CallEnd", {"callid": new})
    assert end.events == ["Ended"]


@pytest_twisted.ensureDeferred
async def test_restart_fail_fast_while_down_then_work_again(reactor: Any) -> None:
    """
    While OpenSIPS is down (noticed by the probe: a short probe interval
    here), commands are refused at once with -32010; Echo still works.
    """
    daemon = await start_daemon(
        reactor, "--probe-interval", "0.2", "--probe-interval-down", "0.2", "--probe-timeout", "0.2"
    )
    try:
        client = await daemon.client()
        await works(daemon, client)
        status = daemon.opensips.status
        daemon.emu.restart(downtime=2.0)
        await until(reactor, lambda: not status.reachable, timeout=2.0)
        began = reactor.seconds()
        refused = await client.command("CallHold", {"callid": "any-call@x"})
        start = await client.command("CallStart", {"caller": ALICE, "callee": BOB})
        echo = await client.command("Echo", {"x": 1})
        # answered at once (no MI round trip): well under one MI timeout
        assert reactor.seconds() - began < 1.0
        for result in (refused, start):
            assert result.response["error"]["code"] == -32010, result.response
            assert "OpenSIPS unreachable since" in result.response["error"]["data"]
        assert echo.events == ["Reply", "Ended"]
        await until(reactor, lambda: daemon.emu.up, timeout=3.0)
        await until(reactor, lambda: status.subscribed and subscribed_events(daemon) == EVENTS, timeout=5.0)
        await works(daemon, client)
    finally:
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_restart_default_probe_settings_work_within_5_s(reactor: Any) -> None:
    """
    Default probe settings: within 5 s of OpenSIPS coming back the daemon
    has noticed the restart, re-subscribed (the emulator forgot every
    subscription) and re-loaded the registry; commands work.
    """
    daemon = await start_daemon(reactor)
    try:
        client = await daemon.client()
        await works(daemon, client)
        registry = daemon.opensips.registry
        sweeps = registry.stats["sweeps"]
        kept = await daemon.call("dave", "erin")
        daemon.emu.restart(downtime=2.0, forget_dialogs=False)
        assert subscribed_events(daemon) == set()
        await until(reactor, lambda: daemon.emu.up, timeout=3.0)
        back = reactor.seconds()
        await until(
            reactor,
            lambda: subscribed_events(daemon) == EVENTS and registry.stats["sweeps"] > sweeps,
            timeout=5.0,
        )
        assert reactor.seconds() - back <= 5.0
        assert daemon.opensips.status.restarts == 1
        # the registry was re-loaded: the kept call is in it
        assert registry.get(kept) is not None
        await works(daemon, client)
        end = await client.command("CallEnd", {"callid": kept})
        assert end.events == ["Ended"]
        await until(reactor, lambda: daemon.emu.live_dialogs() == [], timeout=5.0)
    finally:
        await stop(daemon)


# 3. the NOTIFY race


@pytest_twisted.ensureDeferred
async def test_notify_race_is_reported_with_the_real_new_call(reactor: Any) -> None:
    """
    baresip loses the NOTIFY race on every transfer: no E_CALL_TRANSFER at
    all; CallStart still ends with CalleeAnswered naming the connected new
    call (found in the registry), never an Error.
    """
    daemon = await start_daemon(reactor)
    try:
        daemon.emu.faults = Faults(notify_race=100.0)
        client = await daemon.client()
        recorder = Recorder(daemon, client)
        for i in range(5):
            daemon.emu.add_phone(f"sip:r{i}a@127.0.0.1", Phone.baresip())
            daemon.emu.add_phone(f"sip:r{i}b@127.0.0.1", Phone.baresip())
        starts = [
            client.command("CallStart", {"caller": f"sip:r{i}a@127.0.0.1", "callee": f"sip:r{i}b@127.0.0.1"})
            for i in range(5)
        ]
        results = await gatherResults(starts)
        assert daemon.emu.fault_counts["notify_race"] == 5
        for result in results:
            assert result.events == [
                "CallerAnswered",
                "Transferring",
                "TransferStart",
                "CalleeAnswered",
                "Ended",
            ]
            new = result.data("CalleeAnswered")[0]["callid"]
            assert new != result.response["result"]["callid"]
            cmd_id = result.response["result"]["cmd_id"]
            answered = next(s for s in recorder.seen[cmd_id] if s.params["event"] == "CalleeAnswered")
            state, timestart, _, to = answered.dialogs[new]
            assert state == 4 and timestart and bare(to) == result.data("Transferring")[0]["destination"]
            assert daemon.emu.dialogs[new].state == 4
        assert sorted(state for (_, _, state) in daemon.emu.live_dialogs()) == [4] * 5
    finally:
        await stop(daemon)


# 4. a callee that never answers


@pytest_twisted.ensureDeferred
async def test_callee_never_answers(reactor: Any) -> None:
    """
    C{callee_ring_timeout} 1 s (OpenSIPS' own INVITE timer, 120 s, scaled
    to 6 s here): Error 408, the new call cancelled and the first ended
    before the Error.
    """
    daemon = await start_daemon(reactor, delay_scale=0.05)
    try:
        client = await daemon.client()
        recorder = Recorder(daemon, client)
        noanswer = "sip:noanswer@127.0.0.1"
        result = await client.command(
            "CallStart", {"caller": ALICE, "callee": noanswer, "callee_ring_timeout": 1}, cmd_id="c1"
        )
        first = result.response["result"]["callid"]
        assert result.events == ["CallerAnswered", "Transferring", "TransferStart", "Error", "Ended"]
        new = result.data("TransferStart")[0]["callid"]
        assert result.data("Error") == [
            f"408 Request Timeout: {noanswer} did not answer within 1 s "
            f"(new call {new} cancelled, call {first} to {ALICE} ended)"
        ]
        error = next(s for s in recorder.seen["c1"] if s.params["event"] == "Error")
        assert sorted(error.params["calls"], key=str) == sorted(
            [{"callid": first, "state": "ended"}, {"callid": new, "state": "ended"}], key=str
        )
        # when the Error came, nothing rang and the caller was not alone
        assert [c for c, (state, *_) in error.dialogs.items() if state in (1, 2, 3, 4)] == []
        assert daemon.emu.live_dialogs() == []
    finally:
        await stop(daemon)


# 5. CallEnd while the caller rings


@pytest_twisted.ensureDeferred
async def test_call_end_while_the_caller_rings(reactor: Any) -> None:
    """
    CallEnd on CallStart's first call while the caller rings: the CallStart
    ends at once with 487 naming the CallEnd; nothing is left.
    """
    daemon = await start_daemon(reactor, delay_scale=0.05)
    try:
        client = await daemon.client()
        caller = "sip:noanswer@127.0.0.1"
        start = client.command("CallStart", {"caller": caller, "callee": BOB}, cmd_id="c1")
        await until(reactor, lambda: [d for d in first_calls(daemon, caller) if d.state == 2] != [])
        first = first_calls(daemon, caller)[0].callid
        end = await client.command("CallEnd", {"callid": first}, cmd_id="e1")
        ended_at = reactor.seconds()
        assert end.events == ["Ended"]
        result = await start
        # promptly: the Error comes when the dialog ends, at most 2 s later
        assert reactor.seconds() - ended_at <= 2.0
        assert result.events == ["Error", "Ended"]
        assert result.data("Error") == [
            f"487 Request Terminated: the call {first} to {caller} was ended by CallEnd e1 "
            "before it was answered"
        ]
        await until(reactor, lambda: daemon.emu.live_dialogs() == [], timeout=1.0)
    finally:
        await stop(daemon)
