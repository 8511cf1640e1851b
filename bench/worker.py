"""
One load process (C{bench/bench.py --worker CONFIG}): the WebSocket clients
of a share of the connections, on their own Twisted reactor.

It speaks a line protocol with the orchestrator (L{bench.processes.Workers})
on stdin/stdout: it says C{ready} once every connection is open, runs the
load on C{go} (idle scenario: the liveness check on C{check}), writes its
measurements (L{bench.load.Load.result}) as JSON to C{cfg["result_path"]},
says C{done}, and closes its connections on C{stop} or when stdin closes.
On a failure it writes the traceback to C{result_path + ".err"} and says
C{failed}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.load import Load, LoadConnection, Slot
from bench.processes import raise_nofile_limit
from bench.scenarios import CALL_SCENARIOS
from bench.wsclient import AutobahnClient, RawWebSocketClient


def worker_main(cfg: dict[str, Any]) -> None:
    """
    Run one load process until it is done or stdin closes (the module
    docstring has the line protocol).

    @param cfg: the configuration the orchestrator wrote (L{bench.runner}):
        C{scenario}, C{mode} (C{"load"} or C{"idle"}), C{port}, C{path},
        C{client}, C{connections}, C{depth}, C{callids}, C{commands},
        C{duration}, C{warmup}, C{hang_timeout} (seconds),
        C{connect_concurrency}, C{idle_check}, C{result_path}.
    """
    from twisted.internet import reactor as _reactor
    from twisted.internet import stdio, task
    from twisted.internet.defer import Deferred, DeferredSemaphore
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import LineReceiver

    reactor: Any = _reactor
    raise_nofile_limit()
    host, port, path = "127.0.0.1", cfg["port"], cfg["path"]
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=30)

    if cfg["client"] == "autobahn":
        from autobahn.twisted.websocket import WebSocketClientFactory

    def open_one() -> Deferred[Any]:
        opened: Deferred[Any] = Deferred()
        factory: Any
        if cfg["client"] == "raw":
            factory = Factory.forProtocol(lambda: RawWebSocketClient(host, port, path, opened))
        else:
            factory = WebSocketClientFactory(f"ws://{host}:{port}{path}", reactor=reactor)
            factory.protocol = AutobahnClient
            factory.setProtocolOptions(utf8validateIncoming=False, tcpNoDelay=True, openHandshakeTimeout=30)
            factory.opened = opened
        d = endpoint.connect(factory)
        d.addErrback(lambda f: opened.errback(f) if not opened.called else None)
        return opened

    async def open_with_retry() -> Any:
        delay = 0.05
        for attempt in range(8):
            try:
                return await open_one()
            except Exception:
                if attempt == 7:
                    raise
                await task.deferLater(reactor, delay, lambda: None)
                delay *= 2
        raise AssertionError("unreachable")

    control: dict[str, Deferred[str]] = {}
    early: set[str] = set()  # words that came before anyone waited for them

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            word = line.decode().strip()
            d = control.pop(word, None)
            if d is not None:
                d.callback(word)
            else:
                early.add(word)

        def connectionLost(self, reason: Any = None) -> None:
            # orchestrator went away: stop at once
            if reactor.running:
                reactor.stop()

    ctl = Control()
    stdio.StandardIO(ctl)

    def say(word: str) -> None:
        transport: Any = ctl.transport
        transport.write(word.encode() + b"\n")

    def wait_for(word: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        if word in early:
            early.discard(word)
            d.callback(word)
        else:
            control[word] = d
        return d

    load = Load(cfg)

    async def run() -> None:
        sem = DeferredSemaphore(cfg["connect_concurrency"])
        t0 = time.perf_counter()
        protocols = list(
            await _gather(
                [
                    sem.run(lambda: Deferred.fromCoroutine(open_with_retry()))
                    for _ in range(cfg["connections"])
                ]
            )
        )
        connect_seconds = time.perf_counter() - t0
        result: dict[str, Any] = {"connected": len(protocols), "connect_seconds": connect_seconds}
        callids = list(cfg.get("callids") or [])
        for proto in protocols:
            conn = LoadConnection(load, proto.send_text)
            proto.on_text = conn.received
            load.connections.append(conn)
            if cfg["mode"] == "load":
                for _ in range(cfg["depth"]):
                    callid = callids.pop(0) if cfg["scenario"] in CALL_SCENARIOS else None
                    conn.slots.append(Slot(conn, cfg["scenario"], callid))
        load.spare_callids = callids  # blind: the calls beyond one per slot
        say("ready")
        if cfg["mode"] == "idle":
            await wait_for("check")
            # liveness check: one Echo on a sample of the idle connections
            sample = (
                load.connections[:: max(1, len(load.connections) // cfg["idle_check"])]
                if cfg["idle_check"]
                else []
            )
            for conn in sample:
                conn.slots.append(Slot(conn, "echo", None))
            load.budget = len(sample)
            load.done = Deferred()
            sweeper = task.LoopingCall(load.sweep)
            sweeper.start(0.5, now=False)
            load.start()
            if not sample:
                load.stop_issuing()
            await load.done
            sweeper.stop()
            result.update(load.result(None))
            result["idle_checked"] = len(sample)
        else:
            await wait_for("go")
            load.done = Deferred()
            sweeper = task.LoopingCall(load.sweep)
            sweeper.start(0.5, now=False)
            load.start()
            window = None
            if load.budget is None:
                await task.deferLater(reactor, cfg["warmup"] + cfg["duration"], lambda: None)
                t_go = load.t_go
                window = (t_go + cfg["warmup"], t_go + cfg["warmup"] + cfg["duration"])
                load.stop_issuing()
            # the sweeper ends every command within --hang-timeout (+0.5 s)
            await load.done
            sweeper.stop()
            result.update(load.result(window))
        with open(cfg["result_path"], "w") as f:
            json.dump(result, f)
        say("done")
        if cfg["mode"] == "idle":
            await wait_for("stop")
        for proto in protocols:
            proto.close()

    def finish(outcome: Any) -> None:
        if hasattr(outcome, "getTraceback"):
            sys.stderr.write(outcome.getTraceback())
            with open(cfg["result_path"] + ".err", "w") as f:
                f.write(outcome.getTraceback())
            try:
                say("failed")
            except Exception:
                pass
        reactor.callLater(0.1, reactor.stop)

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()).addBoth(finish))
    reactor.run()


async def _gather(ds: list[Any]) -> list[Any]:
    from twisted.internet.defer import gatherResults

    return await gatherResults(ds, consumeErrors=True)
