"""
L{callapi.scenarios.reconcile.find_new_call}: finding a transfer's new call
in the registry when no E_CALL_TRANSFER named it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from callapi.opensips.dialog import DialogState
from callapi.scenarios.reconcile import Found, find_new_call
from callapi.testing.fakes import FakeDialogRegistry, result_of

TARGET = "sip:bob@127.0.0.1"


def search(registry: FakeDialogRegistry, since: float = 0.0, exclude: set[str] | None = None) -> Found:
    return result_of(Deferred.fromCoroutine(find_new_call(registry, since, exclude or set(), TARGET)))


def test_found_without_a_sweep() -> None:
    registry = FakeDialogRegistry()
    record = registry.add("new", DialogState.EARLY)
    record.to_uri, record.created_at = f"<{TARGET}>", 5.0
    found = search(registry, since=1.0, exclude={"first"})
    assert found.record is record and found.candidates == ("new",) and registry.sweeps == 0


def test_nothing_known_sweeps_once_then_reports_not_found() -> None:
    registry = FakeDialogRegistry()
    found = search(registry)
    assert found == Found(None, ()) and registry.sweeps == 1


def test_a_call_whose_events_were_lost_is_found_by_the_sweep() -> None:
    class Sweeping(FakeDialogRegistry):
        def sweep(self) -> Deferred[None]:
            self.sweeps += 1
            record = self.add("lost-events", DialogState.EARLY)
            record.to_uri, record.created_at = f"{TARGET};osid=16.2912da46", 9.0
            return succeed(None)

    registry = Sweeping()
    found = search(registry, since=1.0)
    assert found.record is not None and found.record.callid == "lost-events" and registry.sweeps == 1


def test_two_candidates_are_ambiguous_and_need_no_sweep() -> None:
    registry = FakeDialogRegistry()
    for callid in ("a", "b"):
        record = registry.add(callid, DialogState.CONFIRMED)
        record.to_uri, record.created_at = TARGET, 2.0
    found = search(registry, since=1.0)
    assert found.record is None and set(found.candidates) == {"a", "b"} and registry.sweeps == 0
