"""
"Never lie about a call" against a real OpenSIPS (docs/protocol.md, the
guarantee): every outcome a client is told is checked against OpenSIPS' own
C{dlg_list}.  Same environment as C{test_real_opensips.py}; also:

  - C{CALLAPI_TEST_RACE_RUNS}: CallStarts in a row of the NOTIFY race test
    (default 30; the race is about 1 in 30 with baresip: 90 to see it).
  - C{CALLAPI_TEST_LOSSY_RUNS}: CallStart + CallEnd pairs through the lossy
    MI relay (default 6); C{CALLAPI_TEST_LOSS}: percent lost each way
    (default 20); C{CALLAPI_TEST_LOSS_SEED} (default 7).
  - C{CALLAPI_TEST_HARNESS_RUN_DIR}: the running harness' run dir (its
    C{pids} file); the restart test stops OpenSIPS by that pid and starts
    it again with the same command line (C{/proc/<pid>/cmdline}), writing
    the new pid there so that C{down.sh} stops it.  Against the emulator it
    uses C{OpenSIPSEmulator.restart}; without either it is skipped.
  - C{CALLAPI_TEST_SLOW}: the phone that answers after 3 s (CallEnd while
    the caller rings; default: the NOANSWER phone).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import ILogObserver, globalLogPublisher

from tests.integration.conftest import sleep, within
from tests.integration.test_real_opensips import CALL_START, error_of, one, without_pending

pytestmark = [
    pytest.mark.opensips,
    pytest.mark.skipif(
        not os.environ.get("CALLAPI_TEST_MI", "").strip(),
        reason="CALLAPI_TEST_MI is not set (udp:HOST:PORT of a real OpenSIPS, or 'emulator')",
    ),
]


def last_error(result: Any) -> str:
    """The Error text of a command that ended with an Error (after any progress)."""
    assert result.events[-2:] == ["Error", "Ended"], result.notifications
    assert result.events.count("Error") == 1, result.notifications
    text = one(result, "Error")
    assert isinstance(text, str)
    return text


def _count(name: str, default: int) -> int:
    return int(os.environ.get(name, "").strip() or default)


def _bare(uri: Any) -> str:
    return str(uri or "").split(";", 1)[0].strip("<>")


async def live_dialogs(daemon: Any) -> list[dict[str, Any]]:
    """Every dialog OpenSIPS lists in a state below 5."""
    return [d for d in await daemon.all_dialogs() if isinstance(d.get("state"), int) and d["state"] < 5]


async def live_between(daemon: Any, uris: set[str]) -> list[tuple[str, int, str | None, str | None]]:
    """Live dialogs whose From and To are both among C{uris}."""
    return [
        (d["callid"], d["state"], d.get("from_uri"), d.get("to_uri"))
        for d in await live_dialogs(daemon)
        if _bare(d.get("from_uri")) in uris and _bare(d.get("to_uri")) in uris
    ]


async def assert_nothing_live(daemon: Any, before: set[str]) -> None:
    """No live dialog but those of C{before} (Call-IDs live when the test began)."""

    async def new_live() -> list[dict[str, Any]]:
        return [d for d in await live_dialogs(daemon) if d["callid"] not in before]

    waited = 0.0
    while (live := await new_live()) and waited < daemon.setup.dialog_wait:
        await sleep(daemon.reactor, 0.2)
        waited += 0.2
    assert live == [], [(d["callid"], d["state"]) for d in live]


class NotifyDelay:
    """Sets the harness' C{$shv(notify_delay_ms)} (if the proxy has it) and restores it."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.saved: Any = None

    async def set(self, value: int) -> None:
        try:
            current = await self.daemon.mi.call("shv_get", {"name": "notify_delay_ms"})
            self.saved = current["VAR"]["value"]
        except Exception:
            return
        await self.daemon.mi.call("shv_set", {"name": "notify_delay_ms", "type": "int", "value": value})

    async def restore(self) -> None:
        if self.saved is not None:
            await self.daemon.mi.call(
                "shv_set", {"name": "notify_delay_ms", "type": "int", "value": self.saved}
            )


async def truthful_call_start(daemon: Any, outcomes: dict[str, int], run: str) -> None:
    """
    One CallStart CALLER -> CALLEE whose outcome must be what OpenSIPS holds:
    success = the new call confirmed and the first gone; Error = no call
    between caller and callee left up.  Ends the new call.
    """
    caller, callee = daemon.setup.phone("CALLER"), daemon.setup.phone("CALLEE")
    t = time.monotonic()
    result = await daemon.command("CallStart", {"caller": caller, "callee": callee})
    took = time.monotonic() - t
    assert "result" in result.response, result.response
    first = result.response["result"]["callid"]
    if "Error" in result.events:
        text = last_error(result)
        await sleep(daemon.reactor, 0.5)
        live = await live_between(daemon, {caller, callee})
        assert live == [], f"{run}: Error {text!r} while OpenSIPS holds {live}"
        await daemon.wait_gone(first)
        outcomes["error"] = outcomes.get("error", 0) + 1
        return
    assert without_pending(result) == CALL_START, (run, result.notifications)
    new = one(result, "CalleeAnswered")["callid"]
    await daemon.wait_state(new, 4)
    await daemon.wait_gone(first)
    # a success that waited for the start timeout: the NOTIFY race, reconciled
    kind = "success (start missing, reconciled)" if took > 10 else "success"
    outcomes[kind] = outcomes.get(kind, 0) + 1
    end = await daemon.command("CallEnd", {"callid": new})
    assert end.events == ["Ended"], (run, end.notifications)
    await daemon.wait_gone(new)


@pytest_twisted.ensureDeferred
async def test_notify_race_without_delay(daemon: Any) -> None:
    """N CallStarts with a baresip caller and no NOTIFY delay: every outcome true."""
    runs = _count("CALLAPI_TEST_RACE_RUNS", 30)
    before = {d["callid"] for d in await live_dialogs(daemon)}
    knob = NotifyDelay(daemon)
    await knob.set(0)
    emulator = daemon.setup.emulator
    saved_faults = None
    if emulator is not None:  # the emulator's own NOTIFY race, at the real rate
        import attr

        saved_faults = emulator.emulator.faults
        emulator.emulator.faults = attr.evolve(saved_faults, notify_race=4.0)
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    try:
        for i in range(runs):
            await truthful_call_start(daemon, outcomes, f"run {i + 1}/{runs}")
    finally:
        await knob.restore()
        if saved_faults is not None:
            emulator.emulator.faults = saved_faults
        print(f"\nNOTIFY race: {runs} CallStarts in {time.monotonic() - started:.0f} s: {outcomes}")
    await assert_nothing_live(daemon, before)


@pytest_twisted.ensureDeferred
async def test_callee_never_answers(daemon: Any) -> None:
    caller, noanswer = daemon.setup.phone("CALLER"), daemon.setup.phone("NOANSWER")
    result = await daemon.command(
        "CallStart", {"caller": caller, "callee": noanswer, "callee_ring_timeout": 3}, timeout=40
    )
    text = last_error(result)
    assert text.startswith("408 Request Timeout: ") and "did not answer within 3 s" in text, text
    error = next(n for n in result.notifications if n["event"] == "Error")
    calls = {c["callid"]: c["state"] for c in error.get("calls", [])}
    first = result.response["result"]["callid"]
    assert first in calls and len(calls) == 2, error
    for callid in calls:
        await daemon.wait_gone(callid)
    assert await live_between(daemon, {caller, noanswer}) == []


@pytest_twisted.ensureDeferred
async def test_call_end_while_caller_rings(daemon: Any) -> None:
    ringing = os.environ.get("CALLAPI_TEST_SLOW", "").strip() or daemon.setup.phone("NOANSWER")
    callee = daemon.setup.phone("CALLEE")
    pending = daemon.client.command("CallStart", {"caller": ringing, "callee": callee}, cmd_id="ring-1")
    daemon.sent.append({"caller": ringing})
    callid = None
    for _ in range(50):
        started = [
            m
            for m in daemon.client.received
            if isinstance(m, dict) and (m.get("result") or {}).get("cmd_id") == "ring-1"
        ]
        if started:
            callid = started[0]["result"]["callid"]
            break
        await sleep(daemon.reactor, 0.1)
    assert callid, daemon.client.received
    await daemon.wait_state(callid, 2)  # ringing (180)
    t = time.monotonic()
    end = await daemon.command("CallEnd", {"callid": callid})
    assert end.events == ["Ended"], end.notifications
    result = await within(daemon.reactor, pending, 5, "CallStart after CallEnd")
    took = time.monotonic() - t
    text = last_error(result)
    assert text.startswith("487 Request Terminated: "), text
    assert took < 3.5, f"CallStart ended {took:.1f} s after CallEnd"
    await daemon.wait_gone(callid)
    assert await live_between(daemon, {ringing, callee}) == []


def _harness_opensips() -> tuple[Path, int] | None:
    run_dir = os.environ.get("CALLAPI_TEST_HARNESS_RUN_DIR", "").strip()
    if not run_dir:
        return None
    pids = Path(run_dir) / "pids"
    for line in pids.read_text().splitlines():
        name, _, pid = line.partition(" ")
        if name == "opensips":
            return pids, int(pid)
    return None


@pytest_twisted.ensureDeferred
async def test_opensips_restart(daemon: Any) -> None:
    """Outage: commands fail fast (-32010); back: commands work within 5 s."""
    emulator = daemon.setup.emulator
    harness = _harness_opensips()
    if emulator is None and harness is None:
        pytest.skip("CALLAPI_TEST_HARNESS_RUN_DIR is not set (restarting needs the harness' pid file)")
    caller, callee = daemon.setup.phone("CALLER"), daemon.setup.phone("CALLEE")
    await truthful_call_start(daemon, {}, "before the restart")
    status = daemon.opensips.status
    downtime = 8.0
    if emulator is not None:
        emulator.emulator.restart(downtime=downtime)
        t_down = time.monotonic()
    else:
        assert harness is not None
        pids, pid = harness
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGTERM)
        t_down = time.monotonic()
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or b"zombie" in _stat(pid):
                break
            await sleep(daemon.reactor, 0.1)
    # the probe notices (interval 5 s + timeout), then commands fail fast
    for _ in range(150):
        if not status.reachable:
            break
        await sleep(daemon.reactor, 0.1)
    assert not status.reachable, status.describe()
    t = time.monotonic()
    refused = await daemon.command("CallStart", {"caller": caller, "callee": callee}, timeout=5)
    assert refused.response.get("error", {}).get("code") == -32010, refused.response
    assert time.monotonic() - t < 1.0
    if emulator is None:
        await sleep(daemon.reactor, max(0.0, 2.0 - (time.monotonic() - t_down)))
        log = open(Path(pids).parent / "opensips.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        _replace_pid(pids, "opensips", proc.pid)
        t_back = time.monotonic()
        for _ in range(100):  # listening again (MI socket bound)
            if _udp_bound(8080):
                break
            await sleep(daemon.reactor, 0.05)
    else:
        await sleep(daemon.reactor, max(0.0, downtime - (time.monotonic() - t_down)))
        t_back = time.monotonic()
    while True:
        probe = await daemon.command("CallHold", {"callid": "callapi-restart-probe"}, timeout=10)
        if "error" not in probe.response:
            break
        assert probe.response["error"]["code"] == -32010, probe.response
        assert time.monotonic() - t_back < 5.0, "commands still refused 5 s after OpenSIPS came back"
        await sleep(daemon.reactor, 0.2)
    assert error_of(probe) == "404 Dialog not found"
    back_after = time.monotonic() - t_back
    assert back_after < 5.0, back_after
    print(f"\nrestart: commands work again {back_after:.1f} s after OpenSIPS is back")
    await truthful_call_start(daemon, {}, "after the restart")


def _stat(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return b"zombie"


def _udp_bound(port: int) -> bool:
    hexport = f":{port:04X} "
    return any(hexport in line for line in Path("/proc/net/udp").read_text().splitlines()[1:])


def _replace_pid(pids: Path, name: str, pid: int) -> None:
    lines = [
        f"{name} {pid}" if line.partition(" ")[0] == name else line for line in pids.read_text().splitlines()
    ]
    pids.write_text("\n".join(lines) + "\n")


class LossyRelay(DatagramProtocol):
    """
    A UDP relay between callapi's MI socket and OpenSIPS' MI socket that
    drops C{loss} percent of the datagrams each way (seeded).  OpenSIPS
    replies to the relay's own port; events do not pass here.
    """

    def __init__(self, upstream: tuple[str, int], loss: float, seed: int) -> None:
        self.upstream = upstream
        self.loss = loss
        self.rng = random.Random(seed)
        self.client: Any = None
        self.address = ""
        self.dropped = {"to_opensips": 0, "to_callapi": 0}
        self.passed = {"to_opensips": 0, "to_callapi": 0}

    def _lost(self, way: str) -> bool:
        lost = self.rng.random() * 100 < self.loss
        (self.dropped if lost else self.passed)[way] += 1
        return lost

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        assert self.transport is not None
        if addr == self.upstream:
            if self.client is not None and not self._lost("to_callapi"):
                self.transport.write(datagram, self.client)
            return
        self.client = addr
        if not self._lost("to_opensips"):
            self.transport.write(datagram, self.upstream)


@pytest.fixture
def lossy_relay(opensips_setup: Any) -> Any:
    """A L{LossyRelay} to the suite's MI, losing nothing yet; closed after the daemons."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    host, _, port = opensips_setup.mi.removeprefix("udp:").rpartition(":")
    relay = LossyRelay((host, int(port)), 0.0, _count("CALLAPI_TEST_LOSS_SEED", 7))
    listening = reactor.listenUDP(0, relay, interface="127.0.0.1")
    relay.address = f"udp:127.0.0.1:{listening.getHost().port}"
    yield relay
    pytest_twisted.blockon(listening.stopListening() or succeed(None))


@pytest_twisted.ensureDeferred
async def test_mi_loss_through_lossy_relay(
    opensips_setup: Any, lossy_relay: Any, daemon_factory: Any
) -> None:
    from twisted.internet import reactor

    relay = lossy_relay
    loss = float(os.environ.get("CALLAPI_TEST_LOSS", "").strip() or 20)
    retried: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "re-sending" in str(event.get("log_format", "")):
            retried.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observe))
    runs = _count("CALLAPI_TEST_LOSSY_RUNS", 6)
    outcomes: dict[str, int] = {}
    try:
        daemon = await daemon_factory(mi=relay.address)
        before = {d["callid"] for d in await live_dialogs(daemon)}
        caller, callee = opensips_setup.phone("CALLER"), opensips_setup.phone("CALLEE")
        for i in range(runs):
            relay.loss = loss
            result = await daemon.command("CallStart", {"caller": caller, "callee": callee}, timeout=60)
            relay.loss = 0.0  # look at what the proxy holds through a clean path
            run = f"lossy run {i + 1}/{runs}"
            assert "result" in result.response, (run, result.response)
            first = result.response["result"]["callid"]
            await daemon.wait_gone(first, timeout=max(daemon.setup.dialog_wait, 35))
            if "Error" in result.events:
                text = last_error(result)
                outcomes["CallStart error"] = outcomes.get("CallStart error", 0) + 1
                await sleep(reactor, 0.5)
                live = await live_between(daemon, {caller, callee})
                assert live == [], f"{run}: Error {text!r} while OpenSIPS holds {live}"
                continue
            assert without_pending(result) == CALL_START, (run, result.notifications)
            outcomes["CallStart success"] = outcomes.get("CallStart success", 0) + 1
            new = one(result, "CalleeAnswered")["callid"]
            await daemon.wait_state(new, 4)
            relay.loss = loss
            end = await daemon.command("CallEnd", {"callid": new}, timeout=60)
            relay.loss = 0.0
            if end.events == ["Ended"]:
                outcomes["CallEnd ended"] = outcomes.get("CallEnd ended", 0) + 1
                await daemon.wait_gone(new)
            else:
                text = error_of(end)
                outcomes["CallEnd error"] = outcomes.get("CallEnd error", 0) + 1
                live = await daemon.live_dialogs({new})
                if text.startswith("404 "):
                    assert live == {}, f"{run}: CallEnd said {text!r} while OpenSIPS holds {live}"
                await daemon.command("CallEnd", {"callid": new})
                await daemon.wait_gone(new)
        await assert_nothing_live(daemon, before)
    finally:
        relay.loss = 0.0
        globalLogPublisher.removeObserver(cast(ILogObserver, observe))
        print(
            f"\nlossy relay {loss:g} %: {runs} runs {outcomes}; dropped {relay.dropped}, "
            f"passed {relay.passed}; MI re-sends logged: {len(retried)}"
        )
    if loss > 0 and sum(relay.dropped.values()):
        assert retried, "no MI re-send in the log although datagrams were lost"


@pytest_twisted.ensureDeferred
async def test_call_end_with_an_internal_dialog_id(daemon: Any) -> None:
    """A callid that is some dialog's internal ID but no Call-ID: 404, that dialog stays up."""
    caller, callee = daemon.setup.phone("CALLER"), daemon.setup.phone("CALLEE")
    result = await daemon.command("CallStart", {"caller": caller, "callee": callee})
    assert without_pending(result) == CALL_START, result.notifications
    new = one(result, "CalleeAnswered")["callid"]
    await daemon.wait_state(new, 4)
    listed = await daemon.mi.call("dlg_list", {"callid": new})
    internal = listed["Dialog"]["ID"]
    assert internal != new
    end = await daemon.command("CallEnd", {"callid": internal})
    assert error_of(end).startswith("404 "), end.notifications
    await sleep(daemon.reactor, 0.5)
    assert (await daemon.dialog_states()).get(new) == [4], "CallEnd by internal ID touched the dialog"
    end = await daemon.command("CallEnd", {"callid": new})
    assert end.events == ["Ended"], end.notifications
    await daemon.wait_gone(new)
