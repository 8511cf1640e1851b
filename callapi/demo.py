"""
C{twistd -n callapi --demo}: run the daemon against the built-in OpenSIPS
EMULATOR (L{callapi.emulator}) instead of a real proxy, and walk a
demo call through CallHold, CallUnhold and CallEnd over the daemon's own
WebSocket API, logging every message, so a newcomer sees the product work
without any OpenSIPS.  Everything it prints says "EMULATOR" or "demo".
"""

from __future__ import annotations

import json
import socket
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import Logger

from callapi.logging import logger

#: The commands the walkthrough runs on its demo call, in order.
WALKTHROUGH = ("CallHold", "CallUnhold", "CallEnd")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """
    A UDP port on C{host} that the kernel reports free right now (bound to
    port 0 and released), for the emulator's MI socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


class DemoService(Service):
    """
    Starts the emulator on C{mi_address} before the C{opensips} service
    (built with the same address) starts.

    @ivar mi_address: the emulator's MI socket, C{udp:HOST:PORT}.
    @ivar running: the emulator handle (see L{callapi.emulator.start_emulator}).
    """

    _log = logger()

    def __init__(self, reactor: Any, mi_address: tuple[str, int] | None = None, version: str = "3.4") -> None:
        """
        @param mi_address: C{(IPv4 address, UDP port)} for the emulator's MI
            socket; default: a loopback port free now (L{free_udp_port}).
        """
        self._reactor = reactor
        host, port = mi_address if mi_address is not None else ("127.0.0.1", free_udp_port())
        self._mi_host, self._mi_port = host, port
        self.mi_address = f"udp:{host}:{port}"
        self._version = version
        self.running: Any = None
        self._walkthrough: tuple[Any, str] | None = None

    def walkthrough_after(self, websocket_service: Any, path: str) -> None:
        """
        Once C{websocket_service} (a L{callapi.ws.WebSocketService}) listens, connect to it and run
        L{WALKTHROUGH} on a demo call.
        """
        self._walkthrough = (websocket_service, path)

    def startService(self) -> None:
        from callapi.emulator import add_default_phones, start_emulator

        super().startService()
        self.running = start_emulator(
            self._reactor, host=self._mi_host, port=self._mi_port, version=self._version
        )
        add_default_phones(self.running.emulator)
        host, port = self.running.mi_address
        self._log.warn(
            "DEMO MODE: talking to the built-in OpenSIPS EMULATOR {version} at udp:{host}:{port}, "
            "not a real OpenSIPS",
            version=self._version,
            host=host,
            port=port,
        )
        if self._walkthrough is not None:
            websocket_service, path = self._walkthrough
            self._reactor.callLater(0.5, self._start_walkthrough, websocket_service, path)

    def _start_walkthrough(self, websocket_service: Any, path: str) -> None:
        waiting = websocket_service.when_listening()
        waiting.addCallback(lambda port: self._walk(port.getHost().port, path))
        waiting.addErrback(lambda f: self._log.warn("demo walkthrough not run: {e}", e=f.value))

    def new_call(self) -> str:
        """
        Make one more confirmed demo call (alice -> bob) in the emulator.

        @return: its Call-ID.
        """
        return self.running.emulator.add_call("sip:alice@127.0.0.1", "sip:bob@127.0.0.1")

    def _walk(self, port: int, path: str) -> Deferred[Any]:
        callid = self.new_call()
        self._log.info("[demo] emulator call alice -> bob is up, Call-ID {callid}", callid=callid)
        url = f"ws://127.0.0.1:{port}{path}"
        factory = _WalkthroughFactory(url)
        factory.protocol = _WalkthroughProtocol
        factory.callid = callid
        factory.done = Deferred()
        factory.log_ = self._log
        d = TCP4ClientEndpoint(self._reactor, "127.0.0.1", port).connect(factory)
        d.addErrback(lambda f: factory.done.errback(f))

        def finished(_: Any) -> None:
            spare = self.new_call()
            self._log.info(
                "[demo] walkthrough done. Another emulator call is up, try: "
                "callapi-client --url {url} CallHold callid={callid}",
                url=url,
                callid=spare,
            )

        def failed(f: Any) -> None:
            self._log.warn("[demo] walkthrough failed: {e}", e=f.value)

        return factory.done.addCallbacks(finished, failed)

    def stopService(self) -> Any:
        super().stopService()
        if self.running is not None:
            running, self.running = self.running, None
            return running.stop()
        return None


class _WalkthroughFactory(WebSocketClientFactory):
    """
    The walkthrough's client factory.

    @ivar callid: the demo call's Call-ID.
    @ivar done: fires when the walkthrough has run (or fails).
    @ivar log_: where the client logs (Autobahn owns C{log}).
    """

    callid: str
    done: Deferred[None]
    log_: Logger


class _WalkthroughProtocol(WebSocketClientProtocol):
    """
    Sends L{WALKTHROUGH} one command at a time, each after the previous
    command's C{Ended}, logging every message received.
    """

    factory: _WalkthroughFactory

    def onOpen(self) -> None:
        self._steps = list(WALKTHROUGH)
        self._next_id = 1
        self._send_next()

    def _send_next(self) -> None:
        factory = self.factory
        if not self._steps:
            self.sendClose()
            if not factory.done.called:
                factory.done.callback(None)
            return
        method = self._steps.pop(0)
        request = {
            "jsonrpc": "2.0",
            "id": self._next_id,
            "method": method,
            "params": {"callid": factory.callid},
        }
        self._next_id += 1
        factory.log_.info("[demo client] -> {request}", request=json.dumps(request))
        self.sendMessage(json.dumps(request).encode())

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.log_.info("[demo client] <- {message}", message=payload.decode("utf-8", "replace"))
        try:
            message = json.loads(payload)
        except ValueError:
            return
        params = message.get("params") if isinstance(message, dict) else None
        if isinstance(params, dict) and params.get("event") == "Ended":
            self._send_next()

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.done.called:
            self.factory.done.errback(Exception(f"connection closed: {reason}"))
