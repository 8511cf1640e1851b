"""
Verified fakes of callapi's seams (L{callapi.interfaces}), for tests.

Each fake declares the interface it stands for and is checked with
C{zope.interface.verify.verifyObject} in C{tests/}; none of them touches a
socket or the global reactor.

  - L{FakeMIClient}: an L{IMIClient} that records every request and lets the
    test answer it (L{FakeMIClient.reply}, L{FakeMIClient.error},
    L{FakeMIClient.time_out}), in any order, and honours cancellation.
  - L{RecordingSink}: an L{INotificationSink} that records notifications.
  - L{FakeDialogRegistry}: an L{IDialogRegistry} whose dialogs the test sets
    (L{FakeDialogRegistry.add}, L{FakeDialogRegistry.set_state}); C{check}
    and C{resolve} answer at once from those records, or wait for the test
    (C{auto=False}: L{FakeDialogRegistry.answer}, L{FakeDialogRegistry.fail}).
  - L{FakeProxyStatus}: an L{IProxyStatus} the test turns down, up or
    restarts (L{FakeProxyStatus.go_down}, L{FakeProxyStatus.come_up},
    L{FakeProxyStatus.restart}).

There is no fake event hub: the real L{callapi.opensips.events.EventHub} has no I/O,
feed it with C{hub.dispatch(event, params)}.

Small synchronous helpers for Deferreds (in the spirit of trial's
C{successResultOf}) are here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from callapi.errors import MITimeout
from callapi.interfaces import (
    IDialogOwner,
    IDialogRegistry,
    IMIClient,
    INotificationSink,
    IProxyStatus,
    ISubscription,
)
from callapi.opensips.dialog import DialogRecord, DialogState
from callapi.opensips.watch import Watch

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
        #: C{(event, extra)} of every notification sent with C{extra}
        self.extras: list[tuple[str, dict[str, Any]]] = []

    def notify(
        self, method: str, cmd_id: str, event: str, data: Any = None, extra: dict[str, Any] | None = None
    ) -> None:
        self.notifications.append((method, cmd_id, event, data))
        if extra is not None:
            self.extras.append((event, extra))

    def events(self) -> list[tuple[str, Any]]:
        """
        Only C{(event, data)} of each notification, in order.
        """
        return [(event, data) for _, _, event, data in self.notifications]


@implementer(IDialogRegistry)
class FakeDialogRegistry:
    """
    An L{IDialogRegistry} whose dialogs come from the test.

    With C{auto=True} (the default) C{check} and C{resolve} answer at once
    from the records: a record whose state is not C{DELETED} is live, anything
    else is "no such dialog" (C{None}).  With C{auto=False} they wait: the
    test answers with L{answer} / L{fail}.  Every call is recorded in
    L{checks} / L{resolves} (the Call-IDs, in order).

    @ivar records: Call-ID -> L{DialogRecord}.
    @ivar owners: Call-ID -> the claiming L{IDialogOwner}.
    @ivar waiting: C{(kind, callid, Deferred)} of unanswered C{check}
        (C{kind} C{"check"}) and C{resolve} (C{"resolve"}) calls (C{auto=False}).
    """

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.records: dict[str, DialogRecord] = {}
        self.owners: dict[str, IDialogOwner] = {}
        self.checks: list[str] = []
        self.resolves: list[str] = []
        self.sweeps = 0
        self.waiting: list[tuple[str, str, Deferred[Any]]] = []
        self._observers: list[Callable[[Any], None]] = []

    # test controls

    def add(
        self, callid: str, state: DialogState = DialogState.CONFIRMED, dialog_id: str | None = None
    ) -> DialogRecord:
        """
        Put a dialog in the registry (replacing any record of C{callid}) and
        tell the watchers.  C{dialog_id} defaults to C{"<n>.<n>"}.
        """
        n = len(self.records) + 1
        record = DialogRecord(callid, dialog_id or f"{n:x}.{n:x}", state)
        if callid in self.owners:
            record.owner_cmd_id = self.owners[callid].cmd_id
        if state is DialogState.DELETED:
            record.ended_at = 0.0
        self.records[callid] = record
        self._changed(record)
        return record

    def set_state(self, callid: str, state: DialogState) -> DialogRecord:
        """
        Change a dialog's state (adding it if unknown) and tell the watchers.
        """
        record = self.records.get(callid)
        if record is None:
            return self.add(callid, state)
        record.state = state
        if state is DialogState.DELETED and record.ended_at is None:
            record.ended_at = 0.0
        self._changed(record)
        return record

    def remove(self, callid: str) -> None:
        """
        Forget a dialog entirely (as after its linger time).
        """
        self.records.pop(callid, None)

    def _live(self, callid: str) -> DialogRecord | None:
        record = self.records.get(callid)
        if record is None or record.state is DialogState.DELETED:
            return None
        return record

    def _find_waiting(self, kind: str, callid: str) -> Deferred[Any]:
        for i, (k, c, d) in enumerate(self.waiting):
            if k == kind and c == callid:
                del self.waiting[i]
                return d
        raise AssertionError(f"no waiting {kind}({callid!r}) (waiting: {[w[:2] for w in self.waiting]})")

    def answer(self, kind: str, callid: str, result: Any = None) -> None:
        """
        Answer the oldest waiting C{kind} (C{"check"} or C{"resolve"}) of
        C{callid} with C{result} (a L{DialogRecord}, a dialog ID, or C{None}).
        """
        self._find_waiting(kind, callid).callback(result)

    def fail(self, kind: str, callid: str, reason: BaseException | None = None) -> None:
        """
        Fail the oldest waiting C{kind} of C{callid} (default: L{MITimeout}
        of C{dlg_list}).
        """
        self._find_waiting(kind, callid).errback(reason or MITimeout("dlg_list", 5.0))

    def _changed(self, record: DialogRecord) -> None:
        for observer in list(self._observers):
            observer(record)

    # IDialogRegistry

    def get(self, callid: str) -> DialogRecord | None:
        return self.records.get(callid)

    def check(self, callid: str) -> Deferred[Any]:
        self.checks.append(callid)
        if self.auto:
            return succeed(self._live(callid))
        d: Deferred[Any] = Deferred()
        self.waiting.append(("check", callid, d))
        return d

    def resolve(self, callid: str) -> Deferred[Any]:
        self.resolves.append(callid)
        if self.auto:
            record = self._live(callid)
            return succeed(record.dialog_id if record is not None else None)
        d: Deferred[Any] = Deferred()
        self.waiting.append(("resolve", callid, d))
        return d

    def claim(self, callid: str, owner: IDialogOwner) -> None:
        self.owners[callid] = owner
        record = self.records.get(callid)
        if record is not None:
            record.owner_cmd_id = owner.cmd_id
            self._changed(record)

    def release(self, callid: str, owner: IDialogOwner) -> None:
        if self.owners.get(callid) is owner:
            del self.owners[callid]
            record = self.records.get(callid)
            if record is not None:
                record.owner_cmd_id = None
                self._changed(record)

    def owner(self, callid: str) -> IDialogOwner | None:
        return self.owners.get(callid)

    def dialogs(self) -> Iterator[DialogRecord]:
        return iter(list(self.records.values()))

    def sweep(self) -> Deferred[None]:
        """Counted in C{sweeps}; the records are what the test set."""
        self.sweeps += 1
        return succeed(None)

    def watch(self, observer: Callable[[Any], None]) -> ISubscription:
        return Watch(self._observers, observer)


@implementer(IProxyStatus)
class FakeProxyStatus:
    """
    An L{IProxyStatus} the test drives: reachable and subscribed until
    L{go_down}; L{come_up} and L{restart} tell the watchers like the real
    L{callapi.opensips.liveness.ProxyStatus}.

    @ivar now: the clock time L{go_down} / L{come_up} record in C{since}
        when given none.
    """

    def __init__(self) -> None:
        self.reachable = True
        self.since = 0.0
        self.subscribed = True
        self.up_since: str | None = "Thu Jan  1 00:00:00 2026"
        self.restarts = 0
        self.now = 0.0
        self._observers: list[Callable[[Any], None]] = []

    def _tell(self, change: str) -> None:
        for observer in list(self._observers):
            observer(change)

    def go_down(self, at: float | None = None) -> None:
        """
        OpenSIPS stops answering (C{since} = C{at}, default L{now}).
        """
        self.reachable = False
        self.subscribed = False
        self.since = self.now if at is None else at
        self._tell("unreachable")

    def come_up(self, at: float | None = None) -> None:
        """
        OpenSIPS answers again; subscriptions are back.
        """
        self.reachable = True
        self.subscribed = True
        self.since = self.now if at is None else at
        self._tell("reachable")

    def restart(self, up_since: str = "Thu Jan  1 00:00:01 2026") -> None:
        """
        A new C{"Up since"} was seen: OpenSIPS restarted.
        """
        self.up_since = up_since
        self.restarts += 1
        self._tell("restarted")

    # IProxyStatus

    def describe(self) -> str:
        if self.reachable:
            return "OpenSIPS reachable" + ("" if self.subscribed else " (events not subscribed)")
        return (
            f"OpenSIPS unreachable since {self.since:.0f} s (no MI reply for {self.now - self.since:.0f} s)"
        )

    def watch(self, observer: Callable[[str], None]) -> ISubscription:
        return Watch(self._observers, observer)


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
