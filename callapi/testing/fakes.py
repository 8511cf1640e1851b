"""
Verified fakes of callapi's seams (L{callapi.interfaces}), for tests.

Each fake declares the interface it stands for and is checked with
C{zope.interface.verify.verifyObject} in C{tests/}; none of them touches a
socket or the global reactor.

  - L{FakeMIClient}: an L{IMIClient} that records every request and lets the
    test answer it (L{FakeMIClient.reply}, L{FakeMIClient.error},
    L{FakeMIClient.time_out}), in any order, and honours cancellation.
  - L{RecordingSink}: an L{INotificationSink} that records notifications.

There is no fake event hub: the real L{callapi.opensips.events.EventHub} has no I/O,
feed it with C{hub.dispatch(event, params)}.

Small synchronous helpers for Deferreds (in the spirit of trial's
C{successResultOf}) are here too.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from callapi.errors import MITimeout
from callapi.interfaces import IMIClient, INotificationSink

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

#: How a test names a request: its index in L{FakeMIClient.requests}, or an
#: MI method name (then the oldest still pending request of that method).
Which = int | str


@attrs.define
class FakeRequest:
    """
    One recorded L{FakeMIClient.call}.

    @ivar state: C{"pending"}, C{"answered"} (reply or error given) or
        C{"cancelled"} (the caller cancelled the Deferred).
    """

    method: str
    params: dict[str, Any] | None
    timeout: float | None
    deferred: Deferred[Any]
    state: str = "pending"

    def __iter__(self) -> Any:
        """
        Unpack as C{(method, params, timeout)}, so that C{requests} compares
        easily: C{[tuple(r) for r in mi.requests] == [("call_hold", ...)]}.
        """
        return iter((self.method, self.params, self.timeout))


@implementer(IMIClient)
class FakeMIClient:
    """
    An L{IMIClient} whose replies come from the test.

    @ivar requests: every request ever made, in order (L{FakeRequest}).
    @ivar timeout: the default timeout L{time_out} reports when the request
        gave none (like L{callapi.opensips.mi.MIClientProtocol.timeout}).
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.requests: list[FakeRequest] = []
        self.timeout = timeout

    # IMIClient

    @property
    def pending(self) -> dict[int, tuple[str, dict[str, Any] | None]]:
        """
        Unanswered, uncancelled requests: index in L{requests} ->
        C{(method, params)}.
        """
        return {i: (r.method, r.params) for i, r in enumerate(self.requests) if r.state == "pending"}

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        Record the request and return a Deferred the test will fire.
        Cancelling it marks the request C{"cancelled"} (it can then no longer
        be answered, like a real late reply that is dropped).
        """
        if not isinstance(method, str) or not method:
            raise ValueError(f"MI method must be a non-empty string, not {method!r}")
        index = len(self.requests)

        def cancel(_: Deferred[Any]) -> None:
            self.requests[index].state = "cancelled"

        d: Deferred[Any] = Deferred(cancel)
        self.requests.append(FakeRequest(method, params, timeout, d))
        return d

    # test controls

    def methods(self) -> list[str]:
        """
        The MI method of every request, in order.
        """
        return [r.method for r in self.requests]

    def find(self, which: Which) -> FakeRequest:
        """
        The request named by C{which} (index, or oldest pending of a method).

        @raise AssertionError: no such request, or it is not pending.
        """
        if isinstance(which, int):
            if not 0 <= which < len(self.requests):
                raise AssertionError(f"no MI request #{which} (made: {self.methods()})")
            request = self.requests[which]
        else:
            for request in self.requests:
                if request.method == which and request.state == "pending":
                    break
            else:
                raise AssertionError(f"no pending MI request {which!r} (made: {self.methods()})")
        if request.state != "pending":
            raise AssertionError(f"MI request {request.method} is {request.state}, not pending")
        return request

    def reply(self, which: Which, result: Any = "OK") -> None:
        """
        Answer one pending request with C{result}.
        """
        request = self.find(which)
        request.state = "answered"
        request.deferred.callback(result)

    def error(self, which: Which, reason: BaseException) -> None:
        """
        Fail one pending request with C{reason} (e.g. an L{callapi.errors.MIError}).
        """
        request = self.find(which)
        request.state = "answered"
        request.deferred.errback(reason)

    def time_out(self, which: Which) -> None:
        """
        Fail one pending request with L{MITimeout}, as the real client does
        when no reply came in time.
        """
        request = self.find(which)
        self.error(
            which, MITimeout(request.method, self.timeout if request.timeout is None else request.timeout)
        )


@implementer(INotificationSink)
class RecordingSink:
    """
    An L{INotificationSink} that keeps every notification as a
    C{(method, cmd_id, event, data)} tuple in L{notifications}.
    """

    def __init__(self) -> None:
        self.notifications: list[tuple[str, str, str, Any]] = []

    def notify(self, method: str, cmd_id: str, event: str, data: Any = None) -> None:
        self.notifications.append((method, cmd_id, event, data))

    def events(self) -> list[tuple[str, Any]]:
        """
        Only C{(event, data)} of each notification, in order.
        """
        return [(event, data) for _, _, event, data in self.notifications]


# Deferred helpers (synchronous tests)


def _outcome(d: Deferred[Any]) -> list[Any]:
    """
    What C{d} holds now (C{[]} if it has not fired), without changing it.
    """
    seen: list[Any] = []

    def grab(value: Any) -> Any:
        seen.append(value)
        return value

    d.addBoth(grab)
    return seen


def result_of(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already succeeded (left in place).

    @raise AssertionError: it has no result yet, or it failed (the failure
        is then consumed).
    """
    seen = _outcome(d)
    if not seen:
        raise AssertionError(f"{d!r} has no result yet")
    if isinstance(seen[0], Failure):
        d.addErrback(lambda _: None)
        raise AssertionError(f"{d!r} failed: {seen[0].getTraceback()}")
    return seen[0]  # type: ignore[no-any-return]


def failure_of(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """
    The Failure of a Deferred that has already failed; the failure is
    consumed (the Deferred then holds C{None}).

    @param types: if given, the failure must be one of these.
    @raise AssertionError: it has no result yet, succeeded, or failed otherwise.
    """
    seen = _outcome(d)
    if not seen:
        raise AssertionError(f"{d!r} has no result yet")
    outcome = seen[0]
    if not isinstance(outcome, Failure):
        raise AssertionError(f"{d!r} succeeded with {outcome!r}")
    d.addErrback(lambda _: None)
    if types and not outcome.check(*types):
        raise AssertionError(f"{d!r} failed with {outcome.value!r}, expected {types}")
    return outcome


def error_of(d: Deferred[Any], error_type: type[E]) -> E:
    """
    The exception of a Deferred that has already failed with C{error_type}
    (L{failure_of}, typed); the failure is consumed.

    @raise AssertionError: it has no result yet, succeeded, or failed otherwise.
    """
    value = failure_of(d, error_type).value
    assert isinstance(value, error_type), value
    return value


def no_result(d: Deferred[Any]) -> None:
    """
    @raise AssertionError: C{d} has already fired.
    """
    seen = _outcome(d)
    if seen:
        raise AssertionError(f"{d!r} has already fired with {seen[0]!r}")
