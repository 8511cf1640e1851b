"""
Fixtures of the real-OpenSIPS integration suite (C{test_real_opensips.py},
whose docstring lists every environment variable).

  - C{opensips_setup} (session): where OpenSIPS is and which phones to use,
    from the environment; with C{CALLAPI_TEST_MI=emulator} it starts the
    OpenSIPS emulator on loopback instead and defaults the phones to the
    emulator's harness phones.  Skips everything when C{CALLAPI_TEST_MI} is
    not set.
  - C{daemon} (function): a callapi daemon started in-process against that
    OpenSIPS (as C{tests/test_e2e.py} does), plus a WebSocket client; after
    the test it checks OpenSIPS' own C{dlg_list} for dialogs of the test's
    Call-IDs left behind, then stops everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout

#: Phone variables: name -> what the phone must do (for skip reasons).
PHONES = {
    "CALLER": "an auto-answer phone that follows REFER (click-to-dial caller)",
    "CALLEE": "an auto-answer phone that follows REFER (click-to-dial callee)",
    "TARGET": "an auto-answer phone, the blind transfer target",
    "BUSY": "a phone that answers 486 Busy Here",
    "NOANSWER": "a phone that rings forever",
    "UNKNOWN": "a SIP URI the proxy answers 404",
}

#: C{CALLAPI_TEST_MI=emulator}: the emulator's harness phones
#: (callapi.emulator.sip.default_phones; "nobody" is not one of
#: them, so the emulated proxy answers 404 User Not Found).  A linphone
#: caller (no NOTIFY race): CALLAPI_TEST_CALLER=sip:dave@127.0.0.1.
EMULATOR_PHONES = {
    "CALLER": "sip:alice@127.0.0.1",
    "CALLEE": "sip:bob@127.0.0.1",
    "TARGET": "sip:cindy@127.0.0.1",
    "BUSY": "sip:busy@127.0.0.1",
    "NOANSWER": "sip:noanswer@127.0.0.1",
    "UNKNOWN": "sip:nobody@127.0.0.1",
}


#: How long a command may take before the test gives up on it (seconds);
#: C{CALLAPI_TEST_COMMAND_TIMEOUT} overrides it.  A test may pass its own.
COMMAND_TIMEOUT = 60.0
#: How long OpenSIPS may take to bring a dialog to an awaited state, or to
#: tear a test's dialogs down after it (seconds); C{CALLAPI_TEST_DIALOG_WAIT}
#: overrides it.
DIALOG_WAIT = 10.0


@attrs.define
class OpenSIPSSetup:
    """
    Where the suite finds OpenSIPS and its phones.

    @ivar mi: the daemon's C{--mi}.
    @ivar events: the daemon's C{--events}, or C{None} (automatic).
    @ivar sip_uri: the daemon's C{--sip-uri}, or C{None}.
    @ivar phones: phone name (L{PHONES}) -> SIP URI, only those configured.
    @ivar emulator: the running emulator in emulator mode, else C{None}.
    @ivar command_timeout: how long a command may take before the test gives
        up on it (C{CALLAPI_TEST_COMMAND_TIMEOUT}, default L{COMMAND_TIMEOUT}).
    @ivar dialog_wait: how long OpenSIPS may take to bring a dialog to an
        awaited state or to tear it down (C{CALLAPI_TEST_DIALOG_WAIT},
        default L{DIALOG_WAIT}).
    """

    mi: str
    events: str | None = None
    sip_uri: str | None = None
    phones: dict[str, str] = attrs.Factory(dict)
    emulator: Any = None
    command_timeout: float = COMMAND_TIMEOUT
    dialog_wait: float = DIALOG_WAIT

    def phone(self, name: str) -> str:
        """
        The URI of phone C{name}; skips the test when it is not configured.
        """
        uri = self.phones.get(name)
        if not uri:
            pytest.skip(f"CALLAPI_TEST_{name} is not set ({PHONES[name]})")
        return uri


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _seconds(name: str, default: float) -> float:
    """
    The positive number of seconds in environment variable C{name}, or
    C{default} when it is unset; fails the tests naming it when malformed.
    """
    value = _env(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        pytest.fail(f"{name}={value!r}: expected a positive number of seconds", pytrace=False)
    return seconds


@pytest.fixture(scope="session")
def opensips_setup() -> Iterator[OpenSIPSSetup]:
    mi = _env("CALLAPI_TEST_MI")
    if mi is None:
        pytest.skip("CALLAPI_TEST_MI is not set (udp:HOST:PORT of a real OpenSIPS, or 'emulator')")
    configured = {name: uri for name in PHONES if (uri := _env(f"CALLAPI_TEST_{name}"))}
    timeouts = {
        "command_timeout": _seconds("CALLAPI_TEST_COMMAND_TIMEOUT", COMMAND_TIMEOUT),
        "dialog_wait": _seconds("CALLAPI_TEST_DIALOG_WAIT", DIALOG_WAIT),
    }
    if mi != "emulator":
        yield OpenSIPSSetup(
            mi, _env("CALLAPI_TEST_EVENTS"), _env("CALLAPI_TEST_SIP_URI"), configured, **timeouts
        )
        return
    from twisted.internet import reactor

    from callapi.emulator import start_emulator

    running = start_emulator(
        reactor,
        delay_scale=float(_env("CALLAPI_TEST_EMULATOR_DELAY_SCALE") or 0.05),
        version=_env("CALLAPI_TEST_EMULATOR_VERSION") or "3.4",
    )
    host, port = running.mi_address
    try:
        yield OpenSIPSSetup(
            f"udp:{host}:{port}",
            _env("CALLAPI_TEST_EVENTS"),
            _env("CALLAPI_TEST_SIP_URI"),
            {**EMULATOR_PHONES, **configured},
            emulator=running,
            **timeouts,
        )
    finally:
        pytest_twisted.blockon(running.stop())


#: $shv(notify_delay_ms) used when CALLAPI_TEST_NOTIFY_DELAY_MS is "auto".
AUTO_NOTIFY_DELAY_MS = 300


async def sleep(reactor: Any, seconds: float) -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


async def within(reactor: Any, d: Deferred[Any], seconds: float, what: str) -> Any:
    """
    Await C{d} for at most C{seconds}; then cancel it and fail naming C{what}.
    """
    d.addTimeout(seconds, reactor)
    try:
        return await d
    except DeferredTimeout:
        raise AssertionError(f"{what}: no outcome within {seconds:g} s") from None


def callids_in(value: Any) -> set[str]:
    """
    Every string under a C{callid} key anywhere in C{value} (requests'
    params, Started results, notification data).
    """
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "callid" and isinstance(item, str):
                found.add(item)
            else:
                found |= callids_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= callids_in(item)
    return found


class Daemon:
    """
    A callapi daemon started in-process against the suite's OpenSIPS, and
    one WebSocket client of it.

    @ivar callids: every Call-ID the test sent or was told about; the
        teardown checks OpenSIPS' dialogs of exactly these.
    """

    def __init__(self, reactor: Any, setup: OpenSIPSSetup, top: Any, client: Any) -> None:
        self.reactor = reactor
        self.setup = setup
        self.top = top
        self.client = client
        self.opensips = top.getServiceNamed("opensips")
        self.runner = top.getServiceNamed("commands").runner
        self.mi = self.opensips.mi
        self.sent: list[dict[str, Any]] = []
        self._saved_notify_delay: Any = None

    @classmethod
    async def start(
        cls, reactor: Any, setup: OpenSIPSSetup, extra: list[str] | None = None, mi: str | None = None
    ) -> Daemon:
        """
        Start a daemon against C{setup}'s OpenSIPS (or C{mi}, e.g. a relay),
        with the options C{extra} appended to its command line.
        """
        from callapi.tap import Options, makeService
        from callapi.testing.wsclient import connect

        argv = ["--listen", "tcp:0:interface=127.0.0.1", "--mi", mi or setup.mi, *(extra or [])]
        if setup.events:
            argv += ["--events", setup.events]
        if setup.sip_uri:
            argv += ["--sip-uri", setup.sip_uri]
        options = Options()
        options.parseOptions(argv)
        top = makeService(options, reactor)
        top.startService()
        try:
            port = (await top.getServiceNamed("websocket").when_listening()).getHost().port
            opensips = top.getServiceNamed("opensips")
            await within(
                reactor,
                opensips.subscribed,
                min(30, setup.command_timeout),
                f"subscribing to events at {setup.mi}",
            )
            status = opensips.subscriptions.status
            bad = {event: s["error"] for event, s in status.items() if not s["ok"]}
            if bad or not status:
                pytest.fail(
                    f"OpenSIPS at {setup.mi} did not accept the event subscriptions "
                    f"on {opensips.event_socket}: {bad or 'no answer'}",
                    pytrace=False,
                )
            client = await within(reactor, connect(reactor, port), 10, "WebSocket connect")
        except BaseException:
            await top.stopService()
            raise
        daemon = cls(reactor, setup, top, client)
        try:
            await daemon._set_notify_delay()
        except BaseException:
            await daemon.stop()
            raise
        return daemon

    # -- commands --------------------------------------------------------

    async def command(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """
        Send one command; return its L{callapi.testing.wsclient.CommandResult}
        (after C{Ended}, or at once for a JSON-RPC error).  C{timeout}
        defaults to the setup's C{command_timeout}.
        """
        if timeout is None:
            timeout = self.setup.command_timeout
        params = dict(params or {})
        self.sent.append(params)
        return await within(self.reactor, self.client.command(method, params), timeout, f"{method} {params}")

    @property
    def callids(self) -> set[str]:
        found = callids_in(self.sent)
        for message in getattr(self.client, "received", []):
            found |= callids_in(message)
        return found

    # -- OpenSIPS' own view (MI dlg_list) ---------------------------------

    async def all_dialogs(self, page: int = 10) -> list[dict[str, Any]]:
        """
        Every dialog of OpenSIPS' C{dlg_list}, paged with C{index}/C{counter}
        (3.4/i_dlg_list): after a few dozen calls the whole list, ended
        dialogs lingering included, no longer fits one datagram and the real
        OpenSIPS answers it with a plain-text C{500 Internal error}.
        """
        dialogs: list[dict[str, Any]] = []
        index = 0
        while True:
            result = await self.mi.call("dlg_list", {"index": index, "counter": page})
            entries = result.get("Dialogs") if isinstance(result, dict) else None
            count = result.get("count") if isinstance(result, dict) else None
            dialogs += [d for d in entries or [] if isinstance(d, dict)]
            index += len(entries or [])
            if not entries or not isinstance(count, int) or index >= count:
                return dialogs

    async def dialog_states(self) -> dict[str, list[int]]:
        """
        Call-ID -> the states of its dialogs, as OpenSIPS' C{dlg_list}
        shows them (3.4 and 4.0: C{{"Dialogs": [...]}}).
        """
        states: dict[str, list[Any]] = {}
        for dialog in await self.all_dialogs():
            if isinstance(dialog, dict) and isinstance(dialog.get("callid"), str):
                states.setdefault(dialog["callid"], []).append(dialog.get("state"))
        return states

    async def live_dialogs(self, callids: set[str]) -> dict[str, list[int]]:
        """The dialogs of C{callids} in a state below 5 (not deleted)."""
        states = await self.dialog_states()
        return {
            callid: [s for s in states[callid] if not (isinstance(s, int) and s >= 5)]
            for callid in callids & set(states)
            if any(not (isinstance(s, int) and s >= 5) for s in states[callid])
        }

    async def wait_state(self, callid: str, state: int, timeout: float | None = None) -> None:
        """
        Wait until OpenSIPS lists a dialog of C{callid} in C{state} (at most
        C{timeout}, default the setup's C{dialog_wait}).
        """
        if timeout is None:
            timeout = self.setup.dialog_wait
        waited = 0.0
        while True:
            states = (await self.dialog_states()).get(callid, [])
            if state in states:
                return
            if waited >= timeout:
                raise AssertionError(
                    f"OpenSIPS shows dialog {callid} in states {states}, not {state}, after {timeout:g} s"
                )
            await sleep(self.reactor, 0.1)
            waited += 0.1

    async def wait_gone(self, callid: str, timeout: float | None = None) -> None:
        """
        Wait until no dialog of C{callid} is in a state below 5 (at most
        C{timeout}, default the setup's C{dialog_wait}).
        """
        if timeout is None:
            timeout = self.setup.dialog_wait
        waited = 0.0
        while live := await self.live_dialogs({callid}):
            if waited >= timeout:
                raise AssertionError(
                    f"OpenSIPS still has dialog {callid} in states {live[callid]} after {timeout:g} s"
                )
            await sleep(self.reactor, 0.1)
            waited += 0.1

    async def check_dialogs(self, fail: bool = True) -> None:
        """
        The after-test check: no dialog of the test's Call-IDs may stay in a
        state below 5 (a short bounded wait lets BYEs/CANCELs finish).
        Leftovers are ended (C{dlg_end_dlg}) so the next test starts clean.
        """
        callids = self.callids
        if not callids:
            return
        waited = 0.0
        while (live := await self.live_dialogs(callids)) and waited < self.setup.dialog_wait:
            await sleep(self.reactor, 0.2)
            waited += 0.2
        if not live:
            return
        for callid in live:
            try:
                await self.mi.call("dlg_end_dlg", {"dialog_id": callid})
            except Exception:
                pass
        if fail:
            raise AssertionError(f"dialogs left in OpenSIPS after the test (Call-ID: states): {live}")

    # -- the harness' NOTIFY knob ------------------------------------------

    async def _set_notify_delay(self) -> None:
        """
        C{CALLAPI_TEST_NOTIFY_DELAY_MS}: "auto" (default) sets the harness
        script's C{$shv(notify_delay_ms)} to L{AUTO_NOTIFY_DELAY_MS} when the
        proxy has that variable, "0"/"off" leaves the proxy alone, a number
        sets it (the variable must exist).  Restored by L{stop}.
        """
        from callapi.errors import MIError

        wanted = (_env("CALLAPI_TEST_NOTIFY_DELAY_MS") or "auto").lower()
        if wanted in ("0", "off", "no", "none"):
            return
        try:
            current = await self.mi.call("shv_get", {"name": "notify_delay_ms"})
            value = current["VAR"]["value"]
        except (MIError, KeyError, TypeError) as e:
            if wanted == "auto":
                return
            pytest.fail(
                f"CALLAPI_TEST_NOTIFY_DELAY_MS={wanted}, but the proxy has no $shv(notify_delay_ms): {e}",
                pytrace=False,
            )
        delay = AUTO_NOTIFY_DELAY_MS if wanted == "auto" else int(wanted)
        await self.mi.call("shv_set", {"name": "notify_delay_ms", "type": "int", "value": delay})
        self._saved_notify_delay = value

    async def stop(self) -> None:
        """Restore the knob, close the client, stop the daemon (unsubscribes)."""
        try:
            if self._saved_notify_delay is not None:
                try:
                    await self.mi.call(
                        "shv_set",
                        {"name": "notify_delay_ms", "type": "int", "value": self._saved_notify_delay},
                    )
                except Exception:
                    pass
            if self.client.state == self.client.STATE_OPEN:
                self.client.sendClose()
                try:
                    await within(self.reactor, self.client.closed, 5, "WebSocket close")
                except AssertionError:
                    self.client.transport.abortConnection()
        finally:
            await self.top.stopService()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[Any]:
    """Remember whether the test body failed (the dialog check then only cleans up)."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call":
        item.callapi_test_failed = report.failed


@pytest.fixture
def daemon(opensips_setup: OpenSIPSSetup, request: Any) -> Iterator[Daemon]:
    """
    A started daemon with a connected client.  After the test: the dialog
    check (failing only a test that passed so far), then a clean stop that
    checks nothing was left running in the daemon.
    """
    from twisted.internet import reactor

    started = pytest_twisted.blockon(Deferred.fromCoroutine(Daemon.start(reactor, opensips_setup)))
    try:
        yield started
        failed = getattr(request.node, "callapi_test_failed", True)
        pytest_twisted.blockon(Deferred.fromCoroutine(started.check_dialogs(fail=not failed)))
    finally:
        pytest_twisted.blockon(Deferred.fromCoroutine(started.stop()))
    assert started.runner.running == {}, started.runner.running
    assert started.opensips.hub.registrations == 0


@pytest.fixture
def daemon_factory(opensips_setup: OpenSIPSSetup, request: Any) -> Iterator[Any]:
    """
    C{await daemon_factory(extra=[...], mi=...)} starts a daemon like
    L{daemon} with extra options (or another C{--mi}); each is checked and
    stopped after the test as L{daemon} is.
    """
    from twisted.internet import reactor

    started: list[Daemon] = []

    async def make(extra: list[str] | None = None, mi: str | None = None) -> Daemon:
        d = await Daemon.start(reactor, opensips_setup, extra, mi)
        started.append(d)
        return d

    try:
        yield make
        failed = getattr(request.node, "callapi_test_failed", True)
        for d in started:
            pytest_twisted.blockon(Deferred.fromCoroutine(d.check_dialogs(fail=not failed)))
    finally:
        for d in started:
            pytest_twisted.blockon(Deferred.fromCoroutine(d.stop()))
    for d in started:
        assert d.runner.running == {}, d.runner.running
        assert d.opensips.hub.registrations == 0
