"""
Is OpenSIPS there? L{ProxyStatus} (L{callapi.interfaces.IProxyStatus})
probes it with C{uptime} (4.0 C{core:uptime}; reply C{{"Now", "Up since",
"Up time"}}, 3.4 README "uptime"): every C{interval} seconds while it
answers, every C{interval_down} seconds while it does not.  Any datagram
from the MI peer counts as a proof of life; C{misses} probes in a row
without an answer make it unreachable.  A new C{"Up since"} is a restart.

Observers (L{ProxyStatus.watch}) hear C{"reachable"}, C{"unreachable"}
and C{"restarted"}; the OpenSIPS service re-learns the MI names,
re-subscribes and reloads the dialog registry on the first and the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from callapi.errors import MIError
from callapi.interfaces import IMIClient, IProxyStatus, ISubscription
from callapi.logging import logger
from callapi.opensips.names import MINames
from callapi.opensips.watch import Watch


@implementer(IProxyStatus)
class ProxyStatus:
    """
    See the module docstring.  Starts as reachable (nothing is known yet).

    @ivar subscribed_fn: returns whether every subscription is in place
        (set by the service to the L{SubscriptionManager}'s C{subscribed}).
    @ivar last_reply: clock seconds of the last datagram from the MI peer.
    """

    _log = logger()

    def __init__(
        self,
        clock: IReactorTime,
        mi: IMIClient,
        names: MINames,
        *,
        interval: float = 5.0,
        interval_down: float = 1.0,
        timeout: float = 1.0,
        misses: int = 2,
    ) -> None:
        """
        @param interval: seconds between probes while reachable.
        @param interval_down: seconds between probes while unreachable (so
            that commands work again within a few seconds of a restart).
        @param timeout: seconds a probe waits (its re-sends included).
        @param misses: unanswered probes in a row that make it unreachable.
        """
        self._clock = clock
        self._mi = mi
        self._names = names
        self.interval, self.interval_down, self.timeout, self.misses = (
            interval,
            interval_down,
            timeout,
            misses,
        )
        self.reachable = True
        self.since = 0.0
        self.up_since: str | None = None
        self.restarts = 0
        self.last_reply = 0.0
        self.subscribed_fn: Callable[[], bool] = lambda: False
        self._missed = 0
        self._observers: list[Callable[[str], None]] = []
        self._timer: IDelayedCall | None = None
        self._running = False

    @property
    def subscribed(self) -> bool:
        return self.reachable and self.subscribed_fn()

    def start(self) -> None:
        """
        Probe now, then periodically.
        """
        self._running = True
        self.since = self.last_reply = self._clock.seconds()
        self.probe()

    def stop(self) -> None:
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def saw_reply(self) -> None:
        """
        A datagram came from the MI peer (L{MIClientProtocol.reply_observers}).
        """
        self.last_reply = self._clock.seconds()
        self._missed = 0
        if not self.reachable:
            self._set(True)

    def probe(self) -> None:
        """
        Send one C{uptime} now (the next one is scheduled when it ends).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d = self._mi.call(self._names.uptime, None, self.timeout)
        d.addCallbacks(self._answered, self._failed)
        d.addBoth(self._schedule)

    def _answered(self, reply: Any) -> None:
        self.saw_reply()
        up = reply.get("Up since") if isinstance(reply, dict) else None
        if isinstance(up, str):
            if self.up_since is not None and up != self.up_since:
                self.restarts += 1
                self._log.warn("OpenSIPS restarted (up since {up})", up=up)
                self.up_since = up
                self._tell("restarted")
            self.up_since = up

    def _failed(self, reason: Any) -> None:
        if isinstance(reason.value, MIError):
            self.saw_reply()  # it answered: alive
            return
        self._missed += 1
        if self.reachable and self._missed >= self.misses:
            self._set(False)

    def _schedule(self, _: Any) -> None:
        if self._running:
            delay = self.interval if self.reachable and not self._missed else self.interval_down
            self._timer = self._clock.callLater(delay, self.probe)

    def _set(self, reachable: bool) -> None:
        self.reachable = reachable
        self.since = self._clock.seconds()
        change = "reachable" if reachable else "unreachable"
        (self._log.info if reachable else self._log.warn)("OpenSIPS MI is {change}", change=change)
        self._tell(change)

    def _tell(self, change: str) -> None:
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:
                self._log.failure("proxy status observer failed on {change}", change=change)

    # IProxyStatus

    def describe(self) -> str:
        if self.reachable:
            return "OpenSIPS reachable" + ("" if self.subscribed else " (events not subscribed)")
        silent = self._clock.seconds() - self.last_reply
        at = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"OpenSIPS unreachable since {at} (no MI reply for {silent:.0f} s)"

    def watch(self, observer: Callable[[str], None]) -> ISubscription:
        return Watch(self._observers, observer)
