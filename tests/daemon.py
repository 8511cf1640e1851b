"""
Helpers for the end-to-end tests: a daemon started in-process against the
OpenSIPS emulator on loopback ports, and a bounded condition wait.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from callapi.tap import Options, makeService
from callapi.emulator.core import start_emulator
from callapi.testing.wsclient import connect


async def until(reactor: Any, predicate: Any, timeout: float = 5.0) -> None:
    """
    Wait (yielding to the reactor) until C{predicate()} is true; fail after
    C{timeout} seconds.  A condition wait, not a fixed sleep.
    """
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        d: Deferred[None] = Deferred()
        reactor.callLater(0.002, d.callback, None)
        await d
        waited += 0.002


class Daemon:
    """
    A started daemon + emulator pair.
    """

    def __init__(self, reactor: Any, emulator_running: Any, top: Any) -> None:
        self.reactor = reactor
        self.running = emulator_running
        self.emu = emulator_running.emulator
        self.top = top
        self.opensips = top.getServiceNamed("opensips")
        self.runner = top.getServiceNamed("commands").runner
        self.port = 0

    async def call(self, caller: str = "alice", callee: str = "bob") -> str:
        callid = self.emu.add_call(f"sip:{caller}@127.0.0.1", f"sip:{callee}@127.0.0.1")
        await until(self.reactor, lambda: self.emu.dialogs[callid].state == 4)
        return callid

    async def client(self) -> Any:
        return await connect(self.reactor, self.port)

    async def stop(self) -> None:
        await self.top.stopService()
        await self.running.stop()


async def start_daemon(reactor: Any, *extra: str, mi: str | None = None,
                       emulator_version: str = "3.4", delay_scale: float = 0) -> Daemon:
    """
    Start an emulator and a daemon pointed at it (or at C{mi}); wait until
    the WebSocket port listens and, with the emulator, the subscriptions
    were answered.
    """
    running = start_emulator(reactor, delay_scale=delay_scale, version=emulator_version)
    host, port = running.mi_address
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1",
                          "--mi", mi or f"udp:{host}:{port}", *extra])
    top = makeService(options, reactor)
    top.startService()
    daemon = Daemon(reactor, running, top)
    daemon.port = (await top.getServiceNamed("websocket").when_listening()).getHost().port
    if mi is None:
        await daemon.opensips.subscribed
    return daemon
