"""
Verified fakes of callapi's seams (L{callapi.interfaces}), for tests.

Each fake declares the interface it stands for and is checked with
C{zope.interface.verify.verifyObject} in C{tests/}; none of them touches a
socket or the global reactor.

  - L{FakeMIClient}: an L{IMIClient} that records every request and lets the
    test answer it (L{FakeMIClient.reply}, L{FakeMIClient.error},
    L{FakeMIClient.time_out}), in any order, and honours cancellation.
  - L{RecordingSink}: an L{INotificationSink} that records notifications.

There is no fake event hub: the real L{callapi.events.EventHub} has no I/O,
feed it with C{hub.dispatch(event, params)}.

Small synchronous helpers for Deferreds (in the spirit of trial's
C{successResultOf}) are here too.
"""

from __future__ import annotations

from typing import Any, TypeVar, Union

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from callapi.errors import MITimeout
from callapi.interfaces import IMIClient, INotificationSink

T = TypeVar("T")

#: How a test names a request: its index in L{FakeMIClient.requests}, or an
#: MI method name (then the oldest still pending request of that method).
Which = Union[int, str]


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
        gave none (like L{callapi.mi.MIClientProtocol.timeout}).
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
        return {i: (r.method, r.params) for i, r in enumerate(self.requests)
                if r.state == "pending"}

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Deferred[Any]:
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
        self.error(which, MITimeout(request.method,
                                    self.timeout if request.timeout is None else request.timeout))


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


def result_of(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already succeeded.

    @raise AssertionError: it has no result yet, or it failed.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has no result yet")
    if isinstance(results[0], Failure):
        failure = results[0]
        d.addErrback(lambda _: None)
        raise AssertionError(f"{d!r} failed: {failure.getTraceback()}")
    return results[0]


def failure_of(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """
    The Failure of a Deferred that has already failed (and consume it).

    @param types: if given, the failure must be one of these.
    @raise AssertionError: it has no result yet, succeeded, or failed otherwise.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has no result yet")
    outcome = results[0]
    if not isinstance(outcome, Failure):
        raise AssertionError(f"{d!r} succeeded with {outcome!r}")
    if types and not outcome.check(*types):
        raise AssertionError(f"{d!r} failed with {outcome.value!r}, expected {types}")
    return outcome


def no_result(d: Deferred[Any]) -> None:
    """
    @raise AssertionError: C{d} has already fired.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if results:
        if isinstance(results[0], Failure):
            results[0].trap(CancelledError, Exception)
        raise AssertionError(f"{d!r} has already fired with {results[0]!r}")
    # leave d as it was: the callback above returned None, so put nothing
    # back; tests only call this on Deferreds they do not use afterwards or
    # that have no result (the appended callback then receives it).
