"""
The harness of the end-to-end tests: the real daemon service tree
(L{callapi.tap.makeService}: WebSocket server, MI socket, event socket,
subscriptions) started in-process over loopback sockets on ephemeral ports,
against the OpenSIPS emulator (L{callapi.emulator.start_emulator}) or
against any OpenSIPS MI address; WebSocket clients of it
(L{callapi.testing.wsclient}); a stop that closes everything; and the check
that nothing was left running, registered or pending.

    daemon = await start_daemon(reactor)                  # + the emulator
    daemon = await start_daemon(reactor, "--events", "udp:10.0.0.5:0",
                                mi="udp:10.0.0.1:8080", emulator=False)
    client = await daemon.client()
    ...
    await daemon.stop()
    daemon.assert_nothing_left()

Also L{until}, a bounded condition wait (never a fixed sleep).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from callapi.emulator import OpenSIPSEmulator, RunningEmulator, start_emulator
from callapi.opensips.service import OpenSIPSService
from callapi.rpc import CommandRunner
from callapi.tap import Options, makeService
from callapi.testing.wsclient import JSONRPCClientProtocol, connect

T = TypeVar("T")

#: How often L{until} looks at its condition (seconds).
POLL_INTERVAL = 0.002
#: How long L{DaemonHarness.stop} waits for a client's closing handshake
#: before dropping the connection (seconds).
CLOSE_WAIT = 5.0


async def until(clock: IReactorTime, predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """
    Wait (yielding to the reactor) until C{predicate()} is true.

    @param timeout: seconds of waiting before giving up.
    @raise AssertionError: the condition was not met within C{timeout}.
    """
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        d: Deferred[None] = Deferred()
        clock.callLater(POLL_INTERVAL, d.callback, None)
        await d
        waited += POLL_INTERVAL


def _watch(d: Deferred[T]) -> Deferred[T]:
    """
    A new Deferred that fires as C{d} does, leaving C{d}'s result in place
    for its other users (a timeout on it cancels only the new one).
    """
    watcher: Deferred[T] = Deferred()

    def forward(result: Any) -> Any:
        if not watcher.called:
            if isinstance(result, Failure):
                watcher.errback(result)
            else:
                watcher.callback(result)
        return result

    d.addBoth(forward)
    return watcher


async def websocket_port(top: MultiService) -> int:
    """
    The TCP port the started service tree's WebSocket server listens on,
    once it listens.
    """
    websocket: Any = top.getServiceNamed("websocket")
    port = await websocket.when_listening()
    return int(port.getHost().port)


class DaemonHarness:
    """
    A started daemon (and the emulator it talks to, if any).

    @ivar reactor: the reactor everything runs on.
    @ivar top: the daemon's service tree.
    @ivar opensips: its C{opensips} service (C{mi}, C{hub}, C{subscriptions},
        C{event_socket}, C{names}).
    @ivar runner: its command runner (C{running}: cmd_id -> command).
    @ivar port: the WebSocket server's TCP port on 127.0.0.1.
    @ivar clients: every client L{client} opened.
    """

    def __init__(
        self, reactor: Any, top: MultiService, port: int, emulator: RunningEmulator | None = None
    ) -> None:
        self.reactor = reactor
        self.top = top
        self.port = port
        self._emulator = emulator
        opensips: Any = top.getServiceNamed("opensips")
        commands: Any = top.getServiceNamed("commands")
        self.opensips: OpenSIPSService = opensips
        self.runner: CommandRunner = commands.runner
        self.clients: list[JSONRPCClientProtocol] = []

    @property
    def running(self) -> RunningEmulator:
        """
        The running emulator (its sockets: C{running.stop()}).

        @raise AssertionError: the daemon was started without one.
        """
        if self._emulator is None:
            raise AssertionError("this daemon was started without the emulator")
        return self._emulator

    @property
    def emu(self) -> OpenSIPSEmulator:
        """
        The emulated OpenSIPS (its dialogs, subscribers and phones).

        @raise AssertionError: the daemon was started without one.
        """
        return self.running.emulator

    async def call(self, caller: str = "alice", callee: str = "bob") -> str:
        """
        Let the emulator set up a confirmed call between two of its phones.

        @return: the call's Call-ID (its dialog is in state 4).
        """
        callid = self.emu.add_call(f"sip:{caller}@127.0.0.1", f"sip:{callee}@127.0.0.1")
        await until(self.reactor, lambda: self.emu.dialogs[callid].state == 4)
        return callid

    async def client(self, path: str = "/call-api") -> JSONRPCClientProtocol:
        """
        Open one more WebSocket client of the daemon; L{stop} closes it.
        """
        client = await connect(self.reactor, self.port, path=path)
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        """
        Close every client still open (closing handshake, bounded by
        L{CLOSE_WAIT} seconds, then the connection is dropped).
        """
        for client in self.clients:
            if client.closed.called:
                continue
            if client.state == client.STATE_OPEN:
                client.sendClose()
            closed = _watch(client.closed)
            closed.addTimeout(CLOSE_WAIT, self.reactor)
            try:
                await closed
            except DeferredTimeout:
                client.transport.abortConnection()  # type: ignore[union-attr]

    async def stop(self) -> None:
        """
        Close the clients, stop the daemon (it unsubscribes and aborts its
        commands), then the emulator.
        """
        try:
            await self.close_clients()
        finally:
            try:
                await self.top.stopService()
            finally:
                if self._emulator is not None:
                    await self._emulator.stop()

    def assert_nothing_left(self) -> None:
        """
        After L{stop}: no command running, no event registration, no pending
        MI request.

        @raise AssertionError: naming what was left.
        """
        assert self.runner.running == {}, self.runner.running
        assert self.opensips.hub.registrations == 0, self.opensips.hub.registrations
        assert self.opensips.mi.pending == {}, self.opensips.mi.pending


async def start_daemon(
    reactor: Any,
    *argv: str,
    mi: str | None = None,
    emulator: bool = True,
    emulator_version: str = "3.4",
    delay_scale: float = 0,
    wait_subscribed: bool | None = None,
    subscribe_timeout: float | None = None,
) -> DaemonHarness:
    """
    Start a daemon (C{--listen} on an ephemeral port of 127.0.0.1) and, with
    C{emulator}, an OpenSIPS emulator on loopback first.

    @param argv: more command-line options of the daemon (e.g.
        C{"--mi-timeout", "0.2"}, C{"--events", ...}).
    @param mi: the daemon's C{--mi}; default: the emulator's MI address.
    @param emulator: start the emulator (the daemon uses it unless C{mi}
        is given); without it C{mi} is required.
    @param emulator_version: C{"3.4"} or C{"4.0"}.
    @param delay_scale: the emulator's phone delays factor (0: at once,
        1: as the traces).
    @param wait_subscribed: wait until the event subscriptions were
        answered; default: when the daemon uses the emulator's MI.
    @param subscribe_timeout: seconds to wait for that; C{None}: no bound.
    @raise AssertionError: no answer to the subscriptions in time.
    @raise ValueError: neither C{emulator} nor C{mi}.
    """
    if mi is None and not emulator:
        raise ValueError("an MI address is needed without the emulator")
    running = start_emulator(reactor, delay_scale=delay_scale, version=emulator_version) if emulator else None
    if mi is None:
        assert running is not None
        host, port = running.mi_address
        mi = f"udp:{host}:{port}"
        if wait_subscribed is None:
            wait_subscribed = True
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--mi", mi, *argv])
    top = makeService(options, reactor)
    top.startService()
    try:
        daemon = DaemonHarness(reactor, top, await websocket_port(top), running)
        if wait_subscribed:
            subscribed = _watch(daemon.opensips.subscribed)
            if subscribe_timeout is not None:
                subscribed.addTimeout(subscribe_timeout, reactor)
            try:
                await subscribed
            except DeferredTimeout:
                raise AssertionError(
                    f"no answer to the event subscriptions at {mi} within {subscribe_timeout:g} s"
                ) from None
    except BaseException:
        await top.stopService()
        if running is not None:
            await running.stop()
        raise
    return daemon
