"""
CallStart after issue 7: CallEnd on its calls (IDialogOwner), the callee
ring timeout, the registry search when no E_CALL_TRANSFER start came
(reconcile before report), and the C{calls} of its Errors.
"""

from __future__ import annotations

from typing import Any

from callapi.interfaces import IDialogOwner
from callapi.opensips.dialog import DialogRecord, DialogState
from callapi.scenarios import Settings
from callapi.scenarios.call_start import CallStart
from callapi.testing.fakes import FakeDialogRegistry
from callapi.testing.scenario import MIReply, ScenarioHarness
from tests.test_call_start import ACCEPTED, ALICE, BOB, Success, answered

FIRST, NEW = Success.FIRST, Success.NEW


def run(
    registry: FakeDialogRegistry, settings: Settings | None = None, **extra: Any
) -> ScenarioHarness[CallStart]:
    def use_the_traces_callid(command: CallStart) -> None:
        command.callid = FIRST

    return ScenarioHarness.start(
        CallStart,
        {"caller": ALICE, "callee": BOB, **extra},
        "c1",
        settings=settings,
        prepare=use_the_traces_callid,
        registry=registry,
    )


def owner(registry: FakeDialogRegistry, callid: str) -> IDialogOwner:
    """The command that claimed C{callid} (there must be one)."""
    found = registry.owner(callid)
    assert found is not None
    return found


def test_claims_its_first_call() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    assert registry.owner(FIRST) is env.command
    env.command.abort()
    assert registry.owner(FIRST) is None


def test_call_end_while_ringing_ends_with_487_at_once() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.EARLY, dialog_id="316.43cfb051")
    env.play(Success.F_1_2)
    owner(registry, FIRST).call_ended_by_api(FIRST, "e1")  # what CallEnd does
    assert env.requests()[1] == ("t_uac_cancel", {"callid": FIRST, "cseq": "1"})
    env.play(MIReply("t_uac_cancel", "OK"), Success.FIRST_DIALOG.changed(2, 5))
    text = (
        f"487 Request Terminated: the call {FIRST} to {ALICE} was ended by CallEnd e1 before it was answered"
    )
    assert env.events() == [("Error", text), ("Ended", None)]
    assert env.sink.extras == [("Error", {"calls": [{"callid": FIRST, "state": "ringing"}]})]
    env.assert_ended_clean()


def test_answer_crossing_call_end_is_hung_up_never_transferred() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.EARLY, dialog_id="316.43cfb051")
    owner(registry, FIRST).call_ended_by_api(FIRST, "e1")
    env.play(MIReply("t_uac_cancel", "OK"), Success.F_3_4)
    # confirmed after the cancel: hung up through the cleanup (resolved ID)
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": "316.43cfb051"})
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert "call_transfer" not in env.mi.methods()
    assert env.events()[-2][0] == "Error" and env.events()[-2][1].startswith("487 Request Terminated")
    assert env.sink.extras == [("Error", {"calls": [{"callid": FIRST, "state": "ended"}]})]
    env.assert_ended_clean()


def test_call_end_of_the_new_call_while_transferring() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.CONFIRMED, dialog_id="316.43cfb051")
    env.play(Success.F_3_4, Success.ANSWER, ACCEPTED, Success.START)
    assert registry.owner(NEW) is env.command
    registry.add(NEW, DialogState.EARLY, dialog_id="2b6.c4a41ee3")
    owner(registry, NEW).call_ended_by_api(NEW, "e1")
    assert [r for r in env.requests() if r[0] == "dlg_end_dlg"] == [
        ("dlg_end_dlg", {"dialog_id": "316.43cfb051"}),
        ("dlg_end_dlg", {"dialog_id": "2b6.c4a41ee3"}),
    ]
    env.play(MIReply("dlg_end_dlg", "OK"), MIReply("dlg_end_dlg", "OK"))
    text = f"487 Request Terminated: call {NEW} was ended by CallEnd e1 before {BOB} answered"
    assert env.events()[-2:] == [("Error", text), ("Ended", None)]
    assert env.sink.extras == [
        ("Error", {"calls": [{"callid": FIRST, "state": "ended"}, {"callid": NEW, "state": "ended"}]})
    ]
    env.assert_ended_clean()


def test_callee_ring_timeout_cancels_the_new_call_and_ends_the_first() -> None:
    registry = FakeDialogRegistry()
    env = run(registry, callee_ring_timeout=20)
    registry.add(FIRST, DialogState.CONFIRMED, dialog_id="316.43cfb051")
    env.play(Success.F_3_4, Success.ANSWER, ACCEPTED, Success.START)
    registry.add(NEW, DialogState.EARLY, dialog_id="2b6.c4a41ee3")
    env.clock.advance(20)
    assert env.requests()[-2:] == [
        ("dlg_end_dlg", {"dialog_id": "316.43cfb051"}),
        ("dlg_end_dlg", {"dialog_id": "2b6.c4a41ee3"}),  # CANCEL of the early dialog
    ]
    env.play(MIReply("dlg_end_dlg", "OK"), MIReply("dlg_end_dlg", "OK"))
    text = (
        f"408 Request Timeout: {BOB} did not answer within 20 s "
        f"(new call {NEW} cancelled, call {FIRST} to {ALICE} ended)"
    )
    assert env.events()[-2:] == [("Error", text), ("Ended", None)]
    env.assert_ended_clean()


def test_callee_ring_timeout_default_is_a_setting() -> None:
    registry = FakeDialogRegistry()
    env = run(registry, settings=Settings(callee_ring_timeout=5.0))
    registry.add(FIRST, DialogState.CONFIRMED)
    registry.add(NEW, DialogState.EARLY)
    env.play(Success.F_3_4, Success.ANSWER, ACCEPTED, Success.START)
    env.clock.advance(5.0)
    assert env.mi.methods()[-2:] == ["dlg_end_dlg", "dlg_end_dlg"]


def _new_dialog(registry: FakeDialogRegistry, state: DialogState, at: float) -> DialogRecord:
    record = registry.add(NEW, state, dialog_id="2b6.c4a41ee3")
    record.to_uri, record.created_at = BOB, at
    return record


def test_no_start_but_the_registry_has_the_connected_call_is_success() -> None:
    # the NOTIFY race: no E_CALL_TRANSFER at all, the new call connected
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.CONFIRMED)
    env.play(Success.F_3_4, Success.ANSWER, ACCEPTED)
    env.clock.advance(1.0)
    _new_dialog(registry, DialogState.CONFIRMED, at=env.clock.seconds())
    env.clock.advance(14.0)
    assert env.events() == [
        answered(),
        ("Transferring", {"caller": ALICE, "destination": BOB}),
        ("TransferStart", {"callid": NEW, "caller": ALICE, "callee": BOB}),
        ("CalleeAnswered", {"callid": NEW, "caller": ALICE, "callee": BOB}),
    ]
    assert env.mi.methods()[-1] == "dlg_end_dlg"
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events()[-1] == ("Ended", None)
    env.assert_ended_clean()


def test_no_start_ringing_new_call_is_followed() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.CONFIRMED)
    env.play(Success.F_3_4, Success.ANSWER, ACCEPTED)
    _new_dialog(registry, DialogState.EARLY, at=env.clock.seconds())
    env.clock.advance(15.0)
    assert env.events()[-1] == ("TransferStart", {"callid": NEW, "caller": ALICE, "callee": BOB})
    env.play(Success.N_3_4)
    assert env.events()[-1] == ("CalleeAnswered", {"callid": NEW, "caller": ALICE, "callee": BOB})
    env.play(MIReply("dlg_end_dlg", "OK"))
    env.assert_ended_clean()


def test_no_start_and_no_new_call_is_the_timeout_error_naming_the_calls() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.CONFIRMED, dialog_id="316.43cfb051")
    old = registry.add("old-call", DialogState.CONFIRMED)
    old.to_uri, old.created_at = BOB, -1.0  # created before the transfer: not it
    env.play(Success.F_3_4, Success.ANSWER, ACCEPTED)
    env.clock.advance(15.0)
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events()[-2][0] == "Error"
    assert env.events()[-2][1].startswith("timed out after 15 s waiting for E_CALL_TRANSFER start")
    assert env.sink.extras == [("Error", {"calls": [{"callid": FIRST, "state": "ended"}]})]
    env.assert_ended_clean()


def test_call_transfer_reply_lost_but_the_new_call_rings_is_followed() -> None:
    """
    The call_transfer reply is lost (the request took effect): not re-sent
    (not idempotent), the registry has the new call ringing; it is
    followed, claimed and reported when it connects.
    """
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.CONFIRMED)
    env.play(Success.F_3_4, Success.ANSWER)
    _new_dialog(registry, DialogState.EARLY, at=env.clock.seconds())
    env.mi.time_out("call_transfer")
    assert env.events() == [
        answered(),
        ("Transferring", {"caller": ALICE, "destination": BOB}),
        ("TransferStart", {"callid": NEW, "caller": ALICE, "callee": BOB}),
    ]
    assert env.mi.methods().count("call_transfer") == 1
    assert registry.owner(NEW) is env.command
    env.play(Success.N_3_4)
    assert env.events()[-1] == ("CalleeAnswered", {"callid": NEW, "caller": ALICE, "callee": BOB})
    env.play(MIReply("dlg_end_dlg", "OK"))
    env.assert_ended_clean()


def test_call_transfer_reply_lost_and_no_new_call_is_the_mi_timeout_error() -> None:
    registry = FakeDialogRegistry()
    env = run(registry)
    registry.add(FIRST, DialogState.CONFIRMED, dialog_id="316.43cfb051")
    env.play(Success.F_3_4, Success.ANSWER)
    env.mi.time_out("call_transfer")
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [
        answered(),
        ("Error", "OpenSIPS did not answer MI call_transfer within 5 s"),
        ("Ended", None),
    ]
    assert env.sink.extras == [("Error", {"calls": [{"callid": FIRST, "state": "ended"}]})]
    env.assert_ended_clean()
