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


def state_of(record: DialogRecord) -> DialogState:
    """
    C{record.state}, read through a call: mypy would keep C{record.state}
    narrowed to the state an earlier C{assert} saw, across later events.
    """
    return record.state


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


# -- the real registry ------------------------------------------------------------

from twisted.internet.task import Clock  # noqa: E402

from callapi.errors import MIError  # noqa: E402
from callapi.opensips.events import EventHub  # noqa: E402
from callapi.opensips.names import MINames  # noqa: E402
from callapi.opensips.registry import DialogRegistry  # noqa: E402
from callapi.testing.fakes import FakeMIClient  # noqa: E402


def dlg(callid: str, state: int = 4, n: int = 1) -> dict[str, Any]:
    return {"ID": f"{n:x}.1", "state": state, "callid": callid, "from_uri": "sip:a@h", "to_uri": "sip:b@h"}


def make(**kw: Any) -> tuple[Clock, FakeMIClient, EventHub, DialogRegistry]:
    clock, mi, hub = Clock(), FakeMIClient(), EventHub()
    registry = DialogRegistry(clock, mi, MINames(), **kw)
    hub.observe(registry.on_event)
    return clock, mi, hub, registry


def test_registry_provides_the_interface() -> None:
    assert verifyObject(IDialogRegistry, make()[3])


def test_paged_load_of_100k_dialogs() -> None:
    _, mi, _, registry = make()
    table = [dlg(f"c{i}", n=i) for i in range(100_000)]
    d = registry.sweep()
    pages = 0
    while mi.pending:
        request = mi.find("dlg_list")
        index, counter = request.params["index"], request.params["counter"]  # type: ignore[index]
        assert counter == 20
        mi.reply("dlg_list", {"count": len(table), "Dialogs": table[index : index + counter]})
        pages += 1
    result_of(d)
    assert pages == 5000 and len(registry) == 100_000 and registry.loaded
    assert registry.get("c77").dialog_id == "4d.1"  # type: ignore[union-attr]


def test_a_failed_page_is_asked_again_at_half_size() -> None:
    _, mi, _, registry = make()
    d = registry.sweep()
    mi.error("dlg_list", MIError("dlg_list", 500, "Internal error"))
    assert mi.find("dlg_list").params == {"index": 0, "counter": 10}
    mi.reply("dlg_list", {"count": 1, "Dialogs": [dlg("a")]})
    result_of(d)
    assert registry.get("a").state is DialogState.CONFIRMED  # type: ignore[union-attr]


def test_events_update_and_ended_dialogs_linger() -> None:
    clock, _, hub, registry = make(linger=60)
    seen: list[Any] = []
    registry.watch(seen.append)
    hub.dispatch("E_DLG_STATE_CHANGED", {"id": "1.2", "callid": "a", "old_state": 1, "new_state": 2})
    hub.dispatch("E_DLG_STATE_CHANGED", {"id": "1.2", "callid": "a", "old_state": 3, "new_state": 4})
    hub.dispatch("E_CALL_HOLD", {"callid": "a", "leg": "callee", "action": "hold", "state": "ok"})
    record = registry.get("a")
    assert record is not None and record.state is DialogState.CONFIRMED and record.held == {"callee"}
    hub.dispatch("E_DLG_STATE_CHANGED", {"id": "1.2", "callid": "a", "old_state": 4, "new_state": "5"})
    assert registry.stats["malformed"] == 1
    clock.advance(1)
    hub.dispatch("E_DLG_STATE_CHANGED", {"id": "1.2", "callid": "a", "old_state": 4, "new_state": 5})
    hub.dispatch("E_DLG_STATE_CHANGED", {"id": "1.2", "callid": "a", "old_state": 2, "new_state": 3})  # late
    assert state_of(record) is DialogState.DELETED and record.ended_at == 1
    hub.dispatch("E_CALL_TRANSFER", {"callid": "a", "transfer_callid": "t", "state": "start"})
    assert registry.get("t") is not None
    clock.advance(60)
    assert [r.callid for r in registry.dialogs()] == ["t"]
    assert len(seen) == 5


def test_cap_drops_ended_first_then_stops_tracking() -> None:
    _, _, hub, registry = make(cap=2)
    for callid in ("a", "b"):
        hub.dispatch("E_DLG_STATE_CHANGED", {"callid": callid, "old_state": 1, "new_state": 2})
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": "a", "old_state": 2, "new_state": 5})
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": "c", "old_state": 1, "new_state": 2})
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": "d", "old_state": 1, "new_state": 2})
    assert sorted(r.callid for r in registry.dialogs()) == ["b", "c"] and registry.stats["over_cap"] == 1


def test_check_resolve_and_404() -> None:
    _, mi, _, registry = make()
    d = registry.resolve("a")
    assert tuple(mi.requests[0]) == ("dlg_list", {"callid": "a"}, None)
    mi.reply(0, {"Dialog": dlg("a", n=7)})
    assert result_of(d) == "7.1"
    assert result_of(registry.resolve("a")) == "7.1" and len(mi.requests) == 1  # known: no MI
    d = registry.check("a")
    mi.error(1, MIError("dlg_list", 404, "No such dialog"))
    assert result_of(d) is None and registry.get("a").state is DialogState.DELETED  # type: ignore[union-attr]
    assert result_of(registry.details("a")).from_uri == "sip:a@h"


def test_sweep_marks_unlisted_dialogs_ended() -> None:
    clock, mi, hub, registry = make()
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": "gone", "old_state": 1, "new_state": 4})
    clock.advance(1)
    d = registry.sweep()
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": "new", "old_state": 1, "new_state": 2})  # during the sweep
    mi.reply("dlg_list", {"count": 1, "Dialogs": [dlg("kept")]})
    result_of(d)
    states = {r.callid: r.state for r in registry.dialogs()}
    assert states == {"gone": DialogState.DELETED, "new": DialogState.EARLY, "kept": DialogState.CONFIRMED}
    clock.advance(300)
    assert mi.find("dlg_list").params == {"index": 0, "counter": 20}  # periodic sweep


def test_owners() -> None:
    _, _, hub, registry = make()
    owner = Owner()
    registry.claim("a", owner)
    hub.dispatch("E_DLG_STATE_CHANGED", {"callid": "a", "old_state": 1, "new_state": 2})
    assert registry.owner("a") is owner and registry.get("a").owner_cmd_id == "c1"  # type: ignore[union-attr]
    registry.release("a", owner)
    assert registry.owner("a") is None
