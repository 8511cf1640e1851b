"""
Keeping OpenSIPS subscribed to the EVI events the commands follow.

Subscriptions expire silently after C{expire} seconds and vanish on an
OpenSIPS restart (3.4 README "Expiry", trace C{h_subscription_expiry}), so
L{SubscriptionManager} re-subscribes periodically, well before expiry.  The
subscribe command's name depends on the proxy (C{event_subscribe} on 3.x,
C{evi:subscribe} on 4.0; 4.0 README "MI command names"): the manager reads
it from an L{MINames} at every round and, while the names are unknown
(OpenSIPS was down at start-up), asks the proxy first (L{detect_names}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from callapi.errors import MIError
from callapi.interfaces import IMIClient
from callapi.logging import logger
from callapi.opensips.names import MINames

#: The events callapi's commands need (callops and dialog modules).
EVENTS = ("E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED")

_names_log = logger("callapi.opensips.names")


def detect_names(mi: IMIClient, names: MINames) -> Deferred[str | None]:
    """
    Ask the proxy which MI commands it has (C{which}) and let C{names} pick
    the names to use (L{MINames.use}); on failure keep the 3.x names (4.0
    accepts them as aliases, 4.0 README "MI command names").

    @return: fires when done, with C{None} when OpenSIPS answered (even with
        an error), else with the reason it did not (timeout, socket down);
        never fails.
    """

    def got(commands: Any) -> str | None:
        if not isinstance(commands, list):
            _names_log.warn("unexpected which reply {reply!r}; using 3.x MI names", reply=commands)
            return None
        names.use([c for c in commands if isinstance(c, str)])
        missing = names.missing(commands)
        _names_log.info(
            "OpenSIPS MI names: {family} style; per-leg hold {per_leg}",
            family=names.family,
            per_leg=names.per_leg_hold,
        )
        if missing:
            _names_log.error(
                "OpenSIPS lacks MI commands {missing}: load the tm, dialog and callops modules",
                missing=", ".join(missing),
            )
        return None

    def failed(reason: Any) -> str | None:
        _names_log.warn(
            "cannot ask OpenSIPS which MI commands it has ({error}); using the 3.x names",
            error=str(reason.value),
        )
        return None if isinstance(reason.value, MIError) else str(reason.value)

    return mi.call("which").addCallbacks(got, failed)


class SubscriptionManager:
    """
    Keeps OpenSIPS subscribed to C{events} on C{socket}.

    Subscribes at L{start}, then re-subscribes every C{refresh} seconds
    (re-subscribing the same socket refreshes it; trace
    C{h_subscription_expiry}), which also restores delivery after an
    OpenSIPS restart.  A round in which a subscription failed is retried
    within seconds, with backoff (C{retry}, doubled at each failed round,
    at most C{refresh}); L{resubscribe_now} starts a round at once (the
    liveness probe calls it when OpenSIPS comes back or restarted).
    L{stop} unsubscribes with C{expire: 0}.  Each round uses
    C{names.subscribe}; while C{names.family} is unknown, a round starts
    with L{detect_names}, and is skipped (retried) when OpenSIPS does not
    answer that.

    @ivar status: event -> C{{"ok": bool, "at": clock seconds, "error": str|None}}.
    @ivar retry: seconds before the first retry of a failed round.
    """

    _log = logger()

    def __init__(
        self,
        clock: IReactorTime,
        mi: IMIClient,
        socket: str,
        expire: int = 120,
        refresh: float | None = None,
        events: Iterable[str] = EVENTS,
        names: MINames | None = None,
        retry: float = 1.0,
    ) -> None:
        """
        @param socket: what OpenSIPS sends to, C{"udp:IP:PORT"} or C{"unix:/path"}.
        @param expire: the C{expire} sent to OpenSIPS, in seconds (> 0).
        @param refresh: seconds between re-subscriptions; default
            C{min(expire / 3, 60)}, so a lost refresh is not fatal.
        @param names: the MI names in use, shared with the commands (the
            service's L{MINames}); C{None}: the 3.x names, never detected.
        @param retry: seconds before re-trying a failed round (then 2x,
            4x ..., at most C{refresh}).
        """
        if expire <= 0:
            raise ValueError("expire must be positive")
        self._clock = clock
        self._mi = mi
        self.socket = socket
        self.expire = int(expire)
        self.refresh = refresh if refresh is not None else max(1.0, min(expire / 3.0, 60.0))
        self.events = tuple(events)
        self.names = names if names is not None else MINames(family="3.x")
        self.status: dict[str, dict[str, Any]] = {}
        self.retry = retry
        self._failed_rounds = 0
        self._timer: IDelayedCall | None = None
        self._running = False
        self._stopped = False
        self._in_round = False
        self._again = False

    @property
    def subscribed(self) -> bool:
        """
        Every event's last subscription succeeded less than C{expire}
        seconds ago.
        """
        now = self._clock.seconds()
        for event in self.events:
            status = self.status.get(event)
            if status is None or not status["ok"] or now - status["at"] >= self.expire:
                return False
        return True

    def resubscribe_now(self) -> None:
        """
        Start a round now (after the current one when one is under way),
        e.g. because OpenSIPS restarted and forgot every subscription.
        """
        if not self._running:
            return
        if self._in_round:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._subscribe_all()

    def start(self) -> Deferred[None]:
        """
        Subscribe now and schedule refreshes.

        @return: a Deferred that fires (never fails) when the first round of
            answers came; failures are logged and retried at the next refresh.
        """
        if self._stopped:
            return succeed(None)
        self._running = True
        return self._subscribe_all()

    def _subscribe_all(self) -> Deferred[None]:
        self._timer = None
        self._in_round = True
        d: Deferred[Any]
        if self.names.family:
            d = self._round()
        else:
            d = detect_names(self._mi, self.names).addCallback(
                lambda unanswered: self._round() if unanswered is None else self._skip(unanswered)
            )

        def reschedule(_: Any) -> None:
            self._in_round = False
            if not self._running:
                return
            if self._again:
                self._again = False
                self._subscribe_all()
                return
            if self.subscribed:
                self._failed_rounds = 0
                delay = self.refresh
            else:
                delay = min(self.refresh, self.retry * 2**self._failed_rounds)
                self._failed_rounds += 1
                self._log.info("re-trying the event subscriptions in {delay} s", delay=delay)
            self._timer = self._clock.callLater(delay, self._subscribe_all)

        d.addCallback(reschedule)
        return d.addCallback(lambda _: None)

    def _skip(self, reason: str) -> None:
        """
        OpenSIPS did not answer C{which} (C{reason}): no subscription this
        round (it would only time out too, or land with guessed names).
        """
        now = self._clock.seconds()
        for event in self.events:
            if not self.status.get(event, {}).get("ok"):
                self.status[event] = {"ok": False, "at": now, "error": reason}

    def _round(self) -> Deferred[Any]:
        if not self._running:
            return succeed(None)  # stopped meanwhile
        rounds = [self._subscribe(event, self.expire) for event in self.events]
        return DeferredList(rounds, consumeErrors=True)

    def _subscribe(self, event: str, expire: int, timeout: float | None = None) -> Deferred[Any]:
        d = self._mi.call(
            self.names.subscribe, {"event": event, "socket": self.socket, "expire": expire}, timeout
        )

        def ok(_: Any) -> None:
            was = self.status.get(event, {}).get("ok")
            self.status[event] = {"ok": True, "at": self._clock.seconds(), "error": None}
            if expire and not was:
                self._log.info(
                    "subscribed to {event} on {socket} (expire {expire} s)",
                    event=event,
                    socket=self.socket,
                    expire=expire,
                )

        def failed(reason: Any) -> None:
            self.status[event] = {"ok": False, "at": self._clock.seconds(), "error": str(reason.value)}
            log = self._log.error if isinstance(reason.value, MIError) else self._log.warn
            log(
                "cannot subscribe to {event} on {socket}: {error}",
                event=event,
                socket=self.socket,
                error=str(reason.value),
            )

        return d.addCallbacks(ok, failed)

    def stop(self, timeout: float | None = 2.0) -> Deferred[None]:
        """
        Cancel the refresh timer and unsubscribe (C{expire: 0}).

        @param timeout: seconds to wait for OpenSIPS' answers (shutdown
            should not hang on an unreachable proxy); C{None}: the MI
            client's default.
        @return: a Deferred that fires when OpenSIPS answered (or the MI
            requests failed); never fails.
        """
        self._running = False
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rounds = [self._subscribe(event, 0, timeout) for event in self.events]
        return DeferredList(rounds, consumeErrors=True).addCallback(lambda _: None)
