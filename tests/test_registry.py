"""
The dialog registry (L{callapi.opensips.registry}) and its verified fake
(L{callapi.testing.fakes.FakeDialogRegistry}).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer
from zope.interface.verify import verifyObject

from callapi.errors import MITimeout
from callapi.interfaces import IDialogOwner, IDialogRegistry, IProxyStatus
from callapi.opensips.dialog import DialogRecord, DialogState
from callapi.testing.fakes import FakeDialogRegistry, FakeProxyStatus, failure_of, no_result, result_of


@implementer(IDialogOwner)
class Owner:
    """
    A command that owns calls.
    """

    method = "CallStart"

    def __init__(self, cmd_id: str = "c1") -> None:
        self.cmd_id = cmd_id
        self.ended: list[tuple[str, str]] = []

    def call_ended_by_api(self, callid: str, by_cmd_id: str) -> None:
        self.ended.append((callid, by_cmd_id))


def test_fakes_provide_their_interfaces() -> None:
    assert verifyObject(IDialogRegistry, FakeDialogRegistry())
    assert verifyObject(IProxyStatus, FakeProxyStatus())
    assert verifyObject(IDialogOwner, Owner())


def test_fake_registry_auto() -> None:
    registry = FakeDialogRegistry()
    seen: list[Any] = []
    watch = registry.watch(seen.append)
    record = registry.add("a@h", DialogState.EARLY, dialog_id="1.2")
    assert registry.get("a@h") is record and seen == [record]
    assert result_of(registry.check("a@h")) is record
    assert result_of(registry.resolve("a@h")) == "1.2"
    assert result_of(registry.check("nope")) is None
    registry.set_state("a@h", DialogState.DELETED)
    assert result_of(registry.resolve("a@h")) is None
    assert registry.checks == ["a@h", "nope"] and registry.resolves == ["a@h", "a@h"]
    owner = Owner()
    registry.claim("a@h", owner)
    assert registry.owner("a@h") is owner and record.owner_cmd_id == "c1"
    registry.release("a@h", Owner("other"))
    assert registry.owner("a@h") is owner
    registry.release("a@h", owner)
    assert registry.owner("a@h") is None and record.owner_cmd_id is None
    watch.cancel()
    registry.add("b@h")
    assert len(seen) == 4 and list(registry.dialogs())[1].callid == "b@h"


def test_fake_registry_scripted() -> None:
    registry = FakeDialogRegistry(auto=False)
    d1, d2 = registry.check("a@h"), registry.resolve("a@h")
    no_result(d1)
    registry.answer("check", "a@h", DialogRecord("a@h", "1.2", DialogState.CONFIRMED))
    assert result_of(d1).state is DialogState.CONFIRMED
    registry.fail("resolve", "a@h")
    failure_of(d2, MITimeout)


def test_fake_status() -> None:
    status = FakeProxyStatus()
    changes: list[str] = []
    status.watch(changes.append)
    assert status.reachable and status.subscribed
    status.now = 20.0
    status.go_down(at=8.0)
    assert not status.reachable and "unreachable" in status.describe() and "12 s" in status.describe()
    status.come_up()
    status.restart()
    assert changes == ["unreachable", "reachable", "restarted"] and status.restarts == 1
