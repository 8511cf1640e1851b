"""
C{CallBlindTransfer} / C{CallAttendedTransfer} (L{callapi.scenarios.transfer})
run by the scenario harness (L{callapi.testing.scenario}: a L{FakeMIClient},
the real L{EventHub}, a L{Clock} and a L{RecordingSink}).

E_CALL_TRANSFER and E_DLG_STATE_CHANGED params are copied from the 3.4
reference traces (member order and values as on the wire; 3.4 README
"E_CALL_TRANSFER", "E_DLG_STATE_CHANGED"), fed in the traces' orders and in
the reorderings UDP allows.  Every test pins the exact notifications and
MI requests, and that nothing is left behind once the command ended
(registrations, timers, pending MI requests).
"""

from __future__ import annotations

from typing import Any

import pytest

from callapi.errors import MIError, RPCError
from callapi.opensips.dialog import DialogState
from callapi.opensips.names import MINames
from callapi.scenarios import COMMANDS, Settings
from callapi.scenarios.transfer import CallAttendedTransfer, CallBlindTransfer, TransferCommand
from callapi.testing.evi import Dialog, transfer_failed, transfer_notify, transfer_ok, transfer_started
from callapi.testing.fakes import FakeDialogRegistry
from callapi.testing.scenario import ENDED, ScenarioHarness, Step

CINDY = "sip:cindy@127.0.0.1"
BUSY = "sip:busy@127.0.0.1"
BOB = "sip:bob@127.0.0.1"
NOBODY = "sip:nobody@127.0.0.1"
ERIN = "sip:erin@127.0.0.1"


#: a step of L{Env.play}: the MI reply "Accepted" to call_transfer
ACCEPTED = "Accepted"
TransferStep = str | Step


class CalleeSuccess:
    """
    d_blind_transfer_callee_success: Accepted, start, ok, then bob (baresip)
    hangs up the old call himself; dlg_end_dlg gets 404.
    """

    OLD = "2fb430784849fbde"
    NEW = "7286e3a637316dcb"
    START = transfer_started(OLD, NEW, NEW, CINDY)  # 3.4: leg = the new Call-ID
    NEW_DIALOG = Dialog("358.a08453e1", "9153082116106", NEW, "9f89153cc1f5954e", "90c6651ca985c078")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    NEW_2_3 = NEW_DIALOG.changed(2, 3)
    OK = transfer_ok(OLD, "callee", NEW, CINDY, "200 Answering")
    OLD_DIALOG = Dialog("d31.b7da76c2", "1362249624955", OLD, "2ddfa3df50cc5a9b", "04ad035bcd83712f")
    OLD_4_5 = OLD_DIALOG.changed(4, 5)
    NEW_3_4 = NEW_DIALOG.changed(3, 4)
    NEW_4_5 = NEW_DIALOG.changed(4, 5)


class NotifyDelay:
    """
    d_blind_transfer_callee_success_notify_delay: start BEFORE the MI reply,
    ok, then notifies 100/200 after ok; dlg_end_dlg OK ends the old call.
    """

    OLD = "73e7aef70dac77ad"
    NEW = "6f239ff10e42b4a2"
    START = transfer_started(OLD, NEW, NEW, CINDY)
    NEW_DIALOG = Dialog("e28.7116ef8", "8993812406551", NEW, "3e3e791f935cee70", "c7a19215856a0232")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    NEW_2_3 = NEW_DIALOG.changed(2, 3)
    OK = transfer_ok(OLD, "callee", NEW, CINDY, "200 Answering")
    NEW_3_4 = NEW_DIALOG.changed(3, 4)
    NOTIFY_100 = transfer_notify(OLD, "", NEW, "100 Trying")
    NOTIFY_200 = transfer_notify(OLD, "", NEW, "200 OK")
    OLD_DIALOG = Dialog("a15.1e2c5fc5", "5610786898657", OLD, "97dcf72ee71ccc14", "e5aacf95eb0c3505")
    OLD_4_5 = OLD_DIALOG.changed(4, 5)
    NEW_4_5 = NEW_DIALOG.changed(4, 5)


class BlindFailure:
    """
    d_blind_transfer_failure: start, the old call ends (4->5), fail 486.
    """

    OLD = "cb5d82b68853d757"
    NEW = "0b72cc523803e8f6"
    START = transfer_started(OLD, NEW, NEW, BUSY)
    NEW_DIALOG = Dialog("48a.3ffda807", "11563940110323", NEW, "e83fcbac0eacb090", "6806SIPpTag014")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    OLD_DIALOG = Dialog("c12.e3e94357", "2321248722494", OLD, "bbeeef64cc486ce0", "c9f55b1680665c66")
    OLD_4_5 = OLD_DIALOG.changed(4, 5)
    NEW_2_5 = NEW_DIALOG.changed(2, 5)
    FAIL = transfer_failed(OLD, "callee", NEW, BUSY, "486 Busy Here")


class UnknownUser:
    """
    c_click_to_dial_transfer_unknown_user: start AND fail (408, destination
    with ;osid=) before the MI reply "Accepted", the old call ends after it.
    """

    OLD = "e9664bfa-f12a-49e9-ac06-64361e5a5eb2"
    NEW = "12b95a11cc06aaca"
    START = transfer_started(OLD, NEW, NEW, NOBODY)
    NEW_DIALOG = Dialog("c0d.7759ce61", "14345575372151", NEW, "54d25f64cccacae0", None)
    NEW_1_5 = NEW_DIALOG.changed(1, 5)
    FAIL = transfer_failed(OLD, "callee", NEW, NOBODY + ";osid=51e.08f4fb46", "408 Request Timeout")
    OLD_DIALOG = Dialog(
        "51e.08f4fb46", "15485047361408", OLD, "533cb9e91f4b999cf76861cbb9ed54ed-a0b3", "edcc1b5f3ecfe708"
    )
    OLD_4_5 = OLD_DIALOG.changed(4, 5)


class RejectedNotify:
    """
    c_click_to_dial_transfer_rejected_notify_delay: start, notify 100 Trying
    (leg callee), fail 486, notify 486 (leg "") after the fail.
    """

    OLD = "d9951552-0030-4f66-958b-fd9165d27f9b"
    NEW = "d22032238b6eba9a"
    START = transfer_started(OLD, NEW, NEW, BUSY)
    NEW_DIALOG = Dialog("92a.5cfcb605", "11172559179717", NEW, "f46c8c2be95d481f", "6806SIPpTag013")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    NOTIFY_100 = transfer_notify(OLD, "callee", NEW, "100 Trying")
    NEW_2_5 = NEW_DIALOG.changed(2, 5)
    FAIL = transfer_failed(OLD, "callee", NEW, BUSY, "486 Busy Here")
    NOTIFY_486 = transfer_notify(OLD, "", NEW, "486 Busy Here")


class ClickToDial:
    """
    a_click_to_dial_success (the transfer half): start, the old call ends
    (4->5, baresip hung up after its NOTIFY) BEFORE ok.
    """

    OLD = "d5b79d51-eed7-4fa5-b156-69f92e1f8b43"
    NEW = "3db24369a17bb877"
    START = transfer_started(OLD, NEW, NEW, BOB)
    OLD_DIALOG = Dialog(
        "ce9.1049d432", "10909809218561", OLD, "533cb9e91f4b999cf76861cbb9ed54ed-4272", "b53b9c304171ef52"
    )
    OLD_4_5 = OLD_DIALOG.changed(4, 5)
    NEW_DIALOG = Dialog("b88.f8b5adb4", "9394366077839", NEW, "80ccbf89a258d684", "56ee25a6cf7815dd")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    NEW_2_3 = NEW_DIALOG.changed(2, 3)
    OK = transfer_ok(OLD, "callee", NEW, BOB, "200 Answering")
    NEW_3_4 = NEW_DIALOG.changed(3, 4)


class CallerSuccess:
    """
    d_blind_transfer_caller_success: leg=caller, the NOTIFY race lost: the
    old call ends 1.4 ms after "Accepted" and no E_CALL_TRANSFER comes at all
    (the new call's E_DLG events carry a Call-ID nobody knows yet).
    """

    OLD = "ce0b276221afcc36"
    NEW = "fb9d13af68900cbc"
    OLD_DIALOG = Dialog("bd2.36f9573", "3139679133539", OLD, "3a295d4aca301e4a", "20fd594f403bbf55")
    OLD_4_5 = OLD_DIALOG.changed(4, 5)
    NEW_DIALOG = Dialog("1b7.88f47905", "8458142699400", NEW, "1e10480b9653d076", "5420fd72e945cdcc")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    NEW_2_3 = NEW_DIALOG.changed(2, 3)
    NEW_3_4 = NEW_DIALOG.changed(3, 4)


class ReferRejected:
    """
    d_blind_transfer_refer_rejected: "Accepted", then nothing at all.
    """

    OLD = "d79b6a864faf872b"
    OLD_DIALOG = Dialog("65a.ca328313", "11365309227948", OLD, "b49ce71185dfffe7", "a58e7e0042590bf8")
    OLD_4_5 = OLD_DIALOG.changed(4, 5)


class Attended:
    """
    e_attended_transfer: call A (alice->dave, REFER to dave) and call B
    (alice->erin); every state raised once per Call-ID, notify on A only.
    """

    A = "47f9007f6258bf10"
    B = "d1277413cf51ee5b"
    NEW = "OZwl1T07yZ"
    START_A = transfer_started(A, "callee", NEW, ERIN)
    START_B = transfer_started(B, "callee", NEW, ERIN)
    NEW_DIALOG = Dialog("eae.5f1f2e91", "16140921401845", NEW, "ESNZB-TZM", "q6sRzmt")
    NEW_1_2 = NEW_DIALOG.changed(1, 2)
    B_DIALOG = Dialog("d8a.aa2f84f", "11600963105450", B, "da046096e29918a2", "XTmx8Fq")
    B_4_5 = B_DIALOG.changed(4, 5)
    NOTIFY_100 = transfer_notify(A, "callee", NEW, "100 Trying")
    NEW_2_3 = NEW_DIALOG.changed(2, 3)
    OK_B = transfer_ok(B, "callee", NEW, ERIN, "200 Ok")
    OK_A = transfer_ok(A, "callee", NEW, ERIN, "200 Ok")
    NOTIFY_200 = transfer_notify(A, "", NEW, "200 Ok")
    NEW_3_4 = NEW_DIALOG.changed(3, 4)
    A_DIALOG = Dialog("a68.312c7817", "9253264278035", A, "a48089dc656f49e7", "kPNOyrR")
    A_4_5 = A_DIALOG.changed(4, 5)


class AttendedBaresip:
    """
    e_attended_transfer_baresip: no Replaces, no E_CALL_TRANSFER; call A
    ends 3.5 ms after "Accepted".
    """

    A = "6e1fa865e39c7322"
    B = "2ed43edcfadc636f"
    OTHER_DIALOG = Dialog(
        "7ba.07a00517", "11782996363888", "3ff1cecdecdb22e2", "aad7952bd6a97a4e", "6d5bc47a1eb7d9db"
    )
    OTHER_1_2 = OTHER_DIALOG.changed(1, 2)
    A_DIALOG = Dialog("c7b.4ebf7b31", "12627534674916", A, "e0b52cab53eb09ab", "b44fea5b311cc843")
    A_4_5 = A_DIALOG.changed(4, 5)


def transferring(destination: str) -> tuple[str, Any]:
    return ("Transferring", {"destination": destination})


def started(callid: str, destination: str) -> tuple[str, Any]:
    return ("TransferStart", {"callid": callid, "destination": destination})


def pending(callid: str, destination: str, extra: str) -> tuple[str, Any]:
    return ("TransferPending", {"callid": callid, "destination": destination, "extra": extra})


def successful(callid: str, destination: str) -> tuple[str, Any]:
    return ("TransferSuccessful", {"callid": callid, "destination": destination})


def error(text: str) -> tuple[str, Any]:
    return ("Error", text)


class Env(ScenarioHarness[TransferCommand]):
    """
    A running transfer command (L{ScenarioHarness}) whose steps may also be
    C{ACCEPTED}.
    """

    def play(self, *steps: TransferStep) -> None:
        """
        Feed events (C{(name, params)}) and C{ACCEPTED} (the MI reply to the
        oldest pending call_transfer), in order.
        """
        for step in steps:
            if isinstance(step, str):
                assert step == ACCEPTED, step
                self.mi.reply(self.ctx.names.transfer, "Accepted")
            else:
                super().play(step)

    def mi_error(self, which: str, code: int, message: str, data: Any = None) -> None:
        self.mi.error(which, MIError(which, code, message, data))


def make(
    cls: type[TransferCommand],
    params: dict[str, Any],
    settings: Settings | None = None,
    names: MINames | None = None,
) -> Env:
    return Env.start(cls, params, "t1", settings=settings, names=names)


def blind(
    callid: str,
    destination: str = CINDY,
    leg: str = "callee",
    settings: Settings | None = None,
    names: MINames | None = None,
) -> Env:
    return make(
        CallBlindTransfer, {"callid": callid, "leg": leg, "destination": destination}, settings, names
    )


def attended(params: dict[str, Any] | None = None, settings: Settings | None = None) -> Env:
    return make(
        CallAttendedTransfer,
        params or {"callidA": Attended.A, "legA": "callee", "callidB": Attended.B, "legB": "callee"},
        settings,
    )


def test_registry() -> None:
    assert COMMANDS["CallBlindTransfer"] is CallBlindTransfer
    assert COMMANDS["CallAttendedTransfer"] is CallAttendedTransfer


# -- CallBlindTransfer: the MI request ------------------------------------------


def test_blind_mi_request() -> None:
    env = blind(CalleeSuccess.OLD)
    assert [tuple(r) for r in env.mi.requests] == [
        ("call_transfer", {"callid": CalleeSuccess.OLD, "leg": "callee", "destination": CINDY}, None)
    ]
    assert env.events() == []
    # E_CALL_TRANSFER and E_DLG_STATE_CHANGED of the transferred call
    assert env.hub.registrations == 2
    # until OpenSIPS answers, the MI request's own timeout bounds the wait;
    # the no-start timer runs from the acceptance
    assert env.command.outstanding == {"subscriptions": 2, "timers": 0, "requests": 1}
    env.play(ACCEPTED)
    assert env.command.outstanding == {"subscriptions": 2, "timers": 1, "requests": 0}


def test_blind_mi_request_leg_caller() -> None:
    env = blind(CallerSuccess.OLD, leg="caller")
    assert env.requests() == [
        ("call_transfer", {"callid": CallerSuccess.OLD, "leg": "caller", "destination": CINDY})
    ]


def test_blind_with_40_names() -> None:
    names = MINames()
    names.use(["callops:transfer", "dialog:end_dlg", "tm:uac_dlg"])
    env = blind(NotifyDelay.OLD, names=names)
    env.play(ACCEPTED, NotifyDelay.START, NotifyDelay.OK)
    env.mi.reply("dialog:end_dlg", "OK")
    assert env.requests() == [
        ("callops:transfer", {"callid": NotifyDelay.OLD, "leg": "callee", "destination": CINDY}),
        ("dialog:end_dlg", {"dialog_id": NotifyDelay.OLD}),
    ]
    assert env.events()[-2:] == [successful(NotifyDelay.NEW, CINDY), ENDED]
    env.assert_ended_clean()


# -- CallBlindTransfer: trace orders --------------------------------------------------


def test_blind_callee_success_trace_order() -> None:
    # d_blind_transfer_callee_success: the old call ends after ok, while
    # dlg_end_dlg is on its way; its 404 is not an error
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED, t.START, t.NEW_1_2, t.NEW_2_3, t.OK)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY)]
    assert env.requests() == [
        ("call_transfer", {"callid": t.OLD, "leg": "callee", "destination": CINDY}),
        ("dlg_end_dlg", {"dialog_id": t.OLD}),
    ]
    env.play(t.OLD_4_5, t.NEW_3_4)
    env.mi_error("dlg_end_dlg", 404, "Requested Dialog not found")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()
    env.play(t.NEW_4_5)
    assert env.events()[-1] == ENDED and len(env.events()) == 4


def test_blind_ignores_another_transfers_events_after_start() -> None:
    """
    An attended transfer that names the same dialog as callidB raises its
    events on that Call-ID too: once this transfer started, events of
    another new call are not this command's.
    """
    t = CalleeSuccess
    other = "OZwl1T07yZ"
    env = blind(t.OLD)
    env.play(
        ACCEPTED,
        t.START,
        transfer_ok(t.OLD, "callee", other, "sip:erin@127.0.0.1", "200 Ok"),
        transfer_notify(t.OLD, "", other, "200 Ok"),
    )
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY)]
    env.play(t.OK)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY)]


def test_blind_lost_accepted_reply_with_events_is_accepted() -> None:
    """
    The "Accepted" datagram is lost but the transfer's start and ok came:
    OpenSIPS did accept it; the success is reported, not an MI timeout.
    """
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(t.START, t.OK)
    env.mi.time_out("call_transfer")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY)]


def test_blind_start_before_accepted_is_held_back() -> None:
    # d_blind_transfer_callee_success_notify_delay: start, then "Accepted"
    t = NotifyDelay
    env = blind(t.OLD)
    env.play(t.START)
    assert env.events() == []
    env.play(ACCEPTED)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY)]
    env.play(t.NEW_1_2, t.NEW_2_3, t.OK, t.NEW_3_4)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY)]
    # notifies after ok: ignored
    env.play(t.NOTIFY_100, t.NOTIFY_200)
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": t.OLD})
    env.mi.reply("dlg_end_dlg", "OK")
    env.play(t.OLD_4_5, t.NEW_4_5)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    assert env.mi.methods() == ["call_transfer", "dlg_end_dlg"]
    env.assert_ended_clean()


def test_blind_start_and_fail_before_accepted() -> None:
    # c_click_to_dial_transfer_unknown_user: start and fail precede
    # "Accepted"; Transferring still comes first; a failed blind transfer
    # leaves the call alone (no dlg_end_dlg)
    t = UnknownUser
    env = blind(t.OLD, destination=NOBODY)
    env.play(t.START, t.NEW_1_5, t.FAIL)
    assert env.events() == []
    env.play(ACCEPTED)
    assert env.events() == [
        transferring(NOBODY),
        started(t.NEW, NOBODY),
        error("transfer failed with status 408 Request Timeout"),
        ENDED,
    ]
    env.play(t.OLD_4_5)
    assert env.mi.methods() == ["call_transfer"]
    assert len(env.events()) == 4
    env.assert_ended_clean()


@pytest.mark.parametrize("leg", [CalleeSuccess.NEW, "callee", "caller", ""])
def test_blind_start_leg_is_not_read(leg: str) -> None:
    # 3.4 puts the new Call-ID into a blind start's leg: only
    # transfer_callid names the new call
    t = CalleeSuccess
    env = blind(t.OLD)
    _, params = t.START
    env.play(ACCEPTED, ("E_CALL_TRANSFER", {**params, "leg": leg}), t.OK)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY)]


def test_blind_notify_is_pending_with_extra() -> None:
    # c_click_to_dial_transfer_rejected_notify_delay as a blind transfer
    t = RejectedNotify
    env = blind(t.OLD, destination=BUSY)
    env.play(ACCEPTED, t.START, t.NEW_1_2, t.NOTIFY_100, t.NEW_2_5, t.FAIL, t.NOTIFY_486)
    assert env.events() == [
        transferring(BUSY),
        started(t.NEW, BUSY),
        pending(t.NEW, BUSY, "100 Trying"),
        error("transfer failed with status 486 Busy Here"),
        ENDED,
    ]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_notify_before_start() -> None:
    # a notify overtaking its start (UDP): the start is reported first
    t = RejectedNotify
    env = blind(t.OLD, destination=BUSY)
    env.play(ACCEPTED, t.NOTIFY_100, t.START, t.FAIL)
    assert env.events() == [
        transferring(BUSY),
        started(t.NEW, BUSY),
        pending(t.NEW, BUSY, "100 Trying"),
        error("transfer failed with status 486 Busy Here"),
        ENDED,
    ]
    env.assert_ended_clean()


def test_blind_several_notifies() -> None:
    t = NotifyDelay
    env = blind(t.OLD)
    env.play(ACCEPTED, t.START, t.NOTIFY_100, t.NOTIFY_200, t.OK)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [
        transferring(CINDY),
        started(t.NEW, CINDY),
        pending(t.NEW, CINDY, "100 Trying"),
        pending(t.NEW, CINDY, "200 OK"),
        successful(t.NEW, CINDY),
        ENDED,
    ]
    env.assert_ended_clean()


def test_blind_failure_trace_order() -> None:
    # d_blind_transfer_failure: no dlg_end_dlg after a failure
    t = BlindFailure
    env = blind(t.OLD, destination=BUSY)
    env.play(ACCEPTED, t.START, t.NEW_1_2, t.OLD_4_5, t.NEW_2_5, t.FAIL)
    assert env.events() == [
        transferring(BUSY),
        started(t.NEW, BUSY),
        error("transfer failed with status 486 Busy Here"),
        ENDED,
    ]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_fail_keeps_the_call_up() -> None:
    # the old call still up when fail comes: still no dlg_end_dlg
    t = BlindFailure
    env = blind(t.OLD, destination=BUSY)
    env.play(ACCEPTED, t.START, t.NEW_1_2, t.NEW_2_5, t.FAIL)
    assert env.events()[-2:] == [error("transfer failed with status 486 Busy Here"), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_old_call_gone_before_ok_no_dlg_end_dlg() -> None:
    # a_click_to_dial_success order: start, old 4->5, ok
    t = ClickToDial
    env = blind(t.OLD, destination=BOB)
    env.play(ACCEPTED, t.START, t.OLD_4_5, t.NEW_1_2, t.NEW_2_3, t.OK, t.NEW_3_4)
    assert env.events() == [transferring(BOB), started(t.NEW, BOB), successful(t.NEW, BOB), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_old_call_gone_before_accepted_no_dlg_end_dlg() -> None:
    t = ClickToDial
    env = blind(t.OLD, destination=BOB)
    env.play(t.START, t.OLD_4_5, ACCEPTED, t.OK)
    assert env.events() == [transferring(BOB), started(t.NEW, BOB), successful(t.NEW, BOB), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.clock.advance(100)
    env.assert_ended_clean()


def test_blind_dlg_end_dlg_other_error_is_not_an_error() -> None:
    # behaviour change (issue 7): the lost dlg_end_dlg is re-sent until OK
    t = NotifyDelay
    env = blind(t.OLD)
    env.play(ACCEPTED, t.START, t.OK)
    env.mi.time_out("dlg_end_dlg")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY)]
    env.clock.advance(0.5)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()


def test_blind_ended_only_after_dlg_end_dlg_answered() -> None:
    t = NotifyDelay
    env = blind(t.OLD)
    env.play(ACCEPTED, t.START, t.OK)
    assert ENDED not in env.events()
    assert not env.command.done
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events()[-1] == ENDED
    env.assert_ended_clean()


@pytest.mark.parametrize("step", ["start", "fail"])
def test_blind_destination_reported_without_osid(step: str) -> None:
    # the fail of c_click_to_dial_transfer_unknown_user carries ;osid=; when
    # it is the first event seen (its start lost), the TransferStart it
    # implies names the destination without it
    t = UnknownUser
    env = blind(t.OLD, destination=NOBODY)
    _, fail = t.FAIL
    if step == "start":
        env.play(ACCEPTED, ("E_CALL_TRANSFER", {**fail, "state": "start", "status": ""}), t.FAIL)
    else:
        env.play(ACCEPTED, t.FAIL)
    assert env.events() == [
        transferring(NOBODY),
        started(t.NEW, NOBODY),
        error("transfer failed with status 408 Request Timeout"),
        ENDED,
    ]
    env.assert_ended_clean()


def test_blind_ok_without_start() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED, t.OK, t.START)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()


# -- CallBlindTransfer: refusals ------------------------------------------------------


def test_blind_refer_rejected_code_result() -> None:
    # callops' source can answer {"Code", "Reason"} (never seen over mi_datagram)
    env = blind(ReferRejected.OLD)
    env.mi.reply("call_transfer", {"Code": 603, "Reason": "Declined"})
    assert env.events() == [error("REFER rejected with status 603 Declined"), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_code_result_below_300_is_accepted() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.mi.reply("call_transfer", {"Code": 202, "Reason": "Accepted"})
    env.play(t.START, t.OK)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()


def test_blind_held_back_events_dropped_on_rejection() -> None:
    t = UnknownUser
    env = blind(t.OLD, destination=NOBODY)
    env.play(t.START, t.FAIL)
    env.mi.reply("call_transfer", {"Code": 603, "Reason": "Declined"})
    assert env.events() == [error("REFER rejected with status 603 Declined"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "callid, code, message, data, text",
    [
        # d_blind_transfer_errors
        ("no-such-call@x", 404, "Dialog not found", None, "404 Dialog not found"),
        ("87637015d69e7f00", 491, "Request Pending", None, "491 Request Pending"),
        (
            "87637015d69e7f00",
            -32602,
            "Invalid params",
            "Too few or too many parameters",
            "-32602 Invalid params (Too few or too many parameters)",
        ),
    ],
)
def test_blind_mi_error(callid: str, code: int, message: str, data: str | None, text: str) -> None:
    env = blind(callid)
    env.mi_error("call_transfer", code, message, data)
    assert env.events() == [error(text), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_491_while_the_first_transfer_runs() -> None:
    # d_blind_transfer_errors: the first transfer's events also reach the
    # second command before its 491; it reports only the 491
    first, second = "sip:slow@127.0.0.1", CINDY
    old, new = "87637015d69e7f00", "061989ae9a80a777"
    env = blind(old, destination=second)
    env.play(transfer_started(old, new, new, first))
    env.mi_error("call_transfer", 491, "Request Pending")
    env.play(transfer_ok(old, "callee", new, first, "200 OK"))
    assert env.events() == [error("491 Request Pending"), ENDED]
    env.assert_ended_clean()


def test_blind_mi_timeout() -> None:
    env = blind(CalleeSuccess.OLD)
    env.mi.time_out("call_transfer")
    assert env.events() == [error("OpenSIPS did not answer MI call_transfer within 5 s"), ENDED]
    env.assert_ended_clean()


def test_blind_mi_timeout_but_the_transfer_went_out() -> None:
    """
    The call_transfer reply is lost but the REFER went out and the new call
    connected: learnt from the registry (never re-sent: not idempotent),
    reported as a success, not as "OpenSIPS did not answer".
    """
    registry = FakeDialogRegistry()
    env = Env.start(
        CallBlindTransfer,
        {"callid": CalleeSuccess.OLD, "leg": "callee", "destination": CINDY},
        "t1",
        registry=registry,
    )
    new = registry.add(CalleeSuccess.NEW, DialogState.CONFIRMED, dialog_id="358.a08453e1")
    new.to_uri, new.created_at = CINDY, env.clock.seconds()
    env.mi.time_out("call_transfer")
    assert env.events() == [
        transferring(CINDY),
        ("TransferStart", {"callid": CalleeSuccess.NEW, "destination": CINDY}),
        ("TransferSuccessful", {"callid": CalleeSuccess.NEW, "destination": CINDY}),
        ENDED,  # the old call is gone from the registry: nothing to end
    ]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


# -- CallBlindTransfer: timeouts ------------------------------------------------------


@pytest.mark.parametrize("settings, seconds", [(None, 15.0), (Settings(transfer_start_timeout=0.3), 0.3)])
def test_blind_no_event_at_all(settings: Settings | None, seconds: float) -> None:
    # d_blind_transfer_refer_rejected: "Accepted" and nothing else
    env = blind(ReferRejected.OLD, settings=settings)
    env.play(ACCEPTED)
    env.clock.advance(seconds * 0.999)
    assert env.events() == [transferring(CINDY)]
    env.clock.advance(seconds * 0.001)
    assert env.events() == [
        transferring(CINDY),
        error(
            f"timed out after {seconds:g} s waiting for E_CALL_TRANSFER start: the REFER may "
            "have been rejected or the transferee never sent its INVITE"
        ),
        ENDED,
    ]
    # the call is left as it is
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()
    env.play(ReferRejected.OLD_4_5)  # the recorder's dlg_end_dlg, later
    assert len(env.events()) == 3


def test_blind_start_cancels_the_no_event_timeout() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED)
    env.clock.advance(14)
    env.play(t.START)
    # only the outcome timer is left
    assert env.command.outstanding["timers"] == 1
    assert [c.getTime() for c in env.clock.getDelayedCalls()] == [14 + 130]
    env.clock.advance(100)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY)]
    env.play(t.OK)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events()[-2:] == [successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize("settings, seconds", [(None, 130.0), (Settings(transfer_timeout=20.0), 20.0)])
def test_blind_start_but_no_outcome(settings: Settings | None, seconds: float) -> None:
    t = CalleeSuccess
    env = blind(t.OLD, settings=settings)
    env.play(ACCEPTED)
    env.clock.advance(1)
    env.play(t.START)
    env.clock.advance(seconds - 0.01)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY)]
    env.clock.advance(0.01)
    assert env.events() == [
        transferring(CINDY),
        started(t.NEW, CINDY),
        error(
            f"timed out after {seconds:g} s waiting for the outcome of the transfer to "
            f"{CINDY} (new call {t.NEW})"
        ),
        ENDED,
    ]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_notify_does_not_extend_the_outcome_timeout() -> None:
    t = NotifyDelay
    env = blind(t.OLD, settings=Settings(transfer_timeout=10.0))
    env.play(ACCEPTED, t.START)
    env.clock.advance(9)
    env.play(t.NOTIFY_100)
    env.clock.advance(1)
    assert env.events()[-2:] == [
        error(f"timed out after 10 s waiting for the outcome of the transfer to {CINDY} (new call {t.NEW})"),
        ENDED,
    ]
    env.assert_ended_clean()


@pytest.mark.parametrize("grace", [2.0, 0.5])
def test_blind_old_call_gone_and_no_start(grace: float) -> None:
    # d_blind_transfer_caller_success: the NOTIFY race lost
    t = CallerSuccess
    env = blind(t.OLD, leg="caller", settings=Settings(transfer_old_gone_grace=grace))
    env.play(ACCEPTED)
    env.clock.advance(0.0014)
    env.play(t.OLD_4_5, t.NEW_1_2, t.NEW_2_3, t.NEW_3_4)
    env.clock.advance(grace * 0.99)
    assert env.events() == [transferring(CINDY)]
    env.clock.advance(grace * 0.01)
    assert env.events() == [
        transferring(CINDY),
        error(
            f"timed out after {grace:g} s waiting for E_CALL_TRANSFER start after the call "
            f"{t.OLD} ended (if the transferee hung up itself, OpenSIPS may not have linked its new call)"
        ),
        ENDED,
    ]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_old_call_gone_then_start_within_grace() -> None:
    t = ClickToDial
    env = blind(t.OLD, destination=BOB)
    env.play(ACCEPTED, t.OLD_4_5)
    env.clock.advance(1.9)
    env.play(t.START)
    env.clock.advance(5)
    env.play(t.OK)
    assert env.events() == [transferring(BOB), started(t.NEW, BOB), successful(t.NEW, BOB), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_blind_old_call_gone_twice_one_grace() -> None:
    t = CallerSuccess
    env = blind(t.OLD, leg="caller")
    env.play(ACCEPTED, t.OLD_4_5, t.OLD_4_5)
    env.clock.advance(2)
    assert [e for e, _ in env.events()] == ["Transferring", "Error", "Ended"]
    env.assert_ended_clean()


def test_blind_other_dialog_states_are_not_the_end() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED, t.OLD_DIALOG.changed(3, 4))
    env.clock.advance(10)
    assert env.events() == [transferring(CINDY)]
    env.play(t.START, t.OK)
    assert env.mi.methods() == ["call_transfer", "dlg_end_dlg"]


# -- CallBlindTransfer: robustness ----------------------------------------------------


def test_blind_events_for_other_calls_are_ignored() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED, BlindFailure.START, BlindFailure.OLD_4_5, BlindFailure.FAIL, NotifyDelay.OK)
    env.clock.advance(10)
    assert env.events() == [transferring(CINDY)]
    env.play(t.START, t.OK)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "junk",
    [
        {"state": "failure"},  # the Go Call API's spelling, never sent
        {"state": "accepted"},
        {"state": None},
        {"transfer_callid": None},
        {"transfer_callid": 12345},
    ],
)
def test_blind_junk_events_are_ignored(junk: dict[str, Any]) -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    _, fail = BlindFailure.FAIL
    env.play(
        ("E_CALL_TRANSFER", {**fail, "callid": t.OLD, **junk}),
        ACCEPTED,
        ("E_CALL_TRANSFER", {**fail, "callid": t.OLD, **junk}),
    )
    assert env.events() == [transferring(CINDY)]
    env.play(t.START, t.OK)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events()[-3:] == [started(t.NEW, CINDY), successful(t.NEW, CINDY), ENDED]
    env.assert_ended_clean()


def test_blind_nothing_after_ended() -> None:
    t = NotifyDelay
    env = blind(t.OLD)
    env.play(t.START, ACCEPTED, t.OK)
    env.mi.reply("dlg_end_dlg", "OK")
    done = list(env.events())
    env.play(
        t.NOTIFY_100,
        t.NOTIFY_200,
        t.OLD_4_5,
        t.NEW_4_5,
        t.START,
        t.OK,
        transfer_failed(t.OLD, "callee", t.NEW, CINDY, "486 Busy Here"),
    )
    env.clock.advance(10000)
    env.command.fail("late failure")
    env.command.end()
    env.command.abort()
    assert env.events() == done
    env.assert_ended_clean()


def test_blind_abort_releases_silently() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED, t.START)
    env.command.abort("client disconnected")
    assert env.command.state == "aborted: client disconnected"
    env.play(t.OK)
    env.clock.advance(1000)
    assert env.events() == [transferring(CINDY), started(t.NEW, CINDY)]
    assert env.mi.methods() == ["call_transfer"]
    assert env.hub.registrations == 0 and env.clock.getDelayedCalls() == []
    assert env.mi.pending == {}


def test_blind_abort_while_dlg_end_dlg_pending() -> None:
    t = CalleeSuccess
    env = blind(t.OLD)
    env.play(ACCEPTED, t.START, t.OK)
    env.command.abort()
    # behaviour change (issue 7): the cleanup outlives the command and finishes
    assert env.mi.requests[1].state == "pending"
    assert list(env.ctx.hangups.pending) == [t.OLD]
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.ctx.hangups.pending == {} and env.sink.notifications[-1][2] == "TransferSuccessful"
    assert env.mi.pending == {} and env.hub.registrations == 0
    assert env.clock.getDelayedCalls() == []


def test_blind_finished_fires_once() -> None:
    env = blind(CalleeSuccess.OLD)
    fired: list[Any] = []
    env.command.finished.addCallback(fired.append)
    env.mi_error("call_transfer", 404, "Dialog not found")
    env.command.fail("again")
    assert fired == [env.command]


@pytest.mark.parametrize(
    "params, data",
    [
        ({"leg": "callee", "destination": CINDY}, "missing parameter callid"),
        ({"callid": "x", "destination": CINDY}, "missing parameter leg"),
        ({"callid": "x", "leg": "callee"}, "missing parameter destination"),
        ({"callid": "x", "leg": "both", "destination": CINDY}, 'leg must be "caller" or "callee"'),
        (
            {"callid": "x", "leg": "callee", "destination": "cindy"},
            "destination is not a valid SIP URI (e.g. sip:alice@example.com)",
        ),
        (
            {"callid": "x", "leg": "callee", "destination": CINDY + "?Replaces=abc"},
            "destination is not a valid SIP URI (e.g. sip:alice@example.com)",
        ),
        (
            {"callid": "a b", "leg": "callee", "destination": CINDY},
            "callid is not a valid SIP Call-ID (RFC 3261 word[@word])",
        ),
        (
            {"callid": "x", "leg": "callee", "destination": CINDY, "transfer_callid": "y"},
            "unknown parameter transfer_callid",
        ),
    ],
)
def test_blind_check(params: dict[str, Any], data: str) -> None:
    with pytest.raises(RPCError) as caught:
        CallBlindTransfer.check(params)
    assert (caught.value.code, caught.value.data) == (-32602, data)


# -- CallAttendedTransfer ------------------------------------------------------------


def test_attended_mi_request() -> None:
    # e_attended_transfer
    env = attended()
    assert [tuple(r) for r in env.mi.requests] == [
        (
            "call_transfer",
            {"callid": Attended.A, "leg": "callee", "transfer_callid": Attended.B, "transfer_leg": "callee"},
            None,
        )
    ]
    # E_CALL_TRANSFER for A and B, E_DLG_STATE_CHANGED for A
    assert env.hub.registrations == 3


def test_attended_mi_request_with_destination() -> None:
    env = attended(
        {
            "callidA": Attended.A,
            "legA": "caller",
            "callidB": Attended.B,
            "legB": "caller",
            "destination": ERIN,
        }
    )
    assert env.requests() == [
        (
            "call_transfer",
            {
                "callid": Attended.A,
                "leg": "caller",
                "transfer_callid": Attended.B,
                "transfer_leg": "caller",
                "destination": ERIN,
            },
        )
    ]


def test_attended_trace_order() -> None:
    # e_attended_transfer: start x2, notify on A, ok x2, notify after ok;
    # each reported once, then call A ended through the proxy
    t = Attended
    env = attended()
    env.play(
        ACCEPTED,
        t.START_A,
        t.START_B,
        t.NEW_1_2,
        t.B_4_5,
        t.NOTIFY_100,
        t.NEW_2_3,
        t.OK_B,
        t.OK_A,
        t.NOTIFY_200,
        t.NEW_3_4,
    )
    assert env.events() == [
        ("Transferring", None),
        started(t.NEW, ERIN),
        pending(t.NEW, ERIN, "100 Trying"),
        successful(t.NEW, ERIN),
    ]
    assert env.requests() == [
        ("call_transfer", {"callid": t.A, "leg": "callee", "transfer_callid": t.B, "transfer_leg": "callee"}),
        ("dlg_end_dlg", {"dialog_id": t.A}),
    ]
    env.mi.reply("dlg_end_dlg", "OK")
    env.play(t.A_4_5)
    assert env.events() == [
        ("Transferring", None),
        started(t.NEW, ERIN),
        pending(t.NEW, ERIN, "100 Trying"),
        successful(t.NEW, ERIN),
        ENDED,
    ]
    env.assert_ended_clean()


def test_attended_doubled_events_before_accepted() -> None:
    t = Attended
    env = attended()
    env.play(t.START_B, t.START_A, t.NOTIFY_100, t.OK_A, t.OK_B, t.NOTIFY_200)
    assert env.events() == []
    env.play(ACCEPTED)
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [
        ("Transferring", None),
        started(t.NEW, ERIN),
        pending(t.NEW, ERIN, "100 Trying"),
        successful(t.NEW, ERIN),
        ENDED,
    ]
    env.assert_ended_clean()


def test_attended_call_a_gone_before_ok() -> None:
    t = Attended
    env = attended()
    env.play(ACCEPTED, t.START_A, t.START_B, t.A_4_5, t.OK_A, t.OK_B)
    assert env.events() == [("Transferring", None), started(t.NEW, ERIN), successful(t.NEW, ERIN), ENDED]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


def test_attended_call_b_ending_is_not_watched() -> None:
    t = Attended
    env = attended()
    env.play(ACCEPTED, t.B_4_5)
    env.clock.advance(10)
    assert env.events() == [("Transferring", None)]


def test_attended_destination_given_is_the_fallback() -> None:
    t = Attended
    env = attended({"callidA": t.A, "legA": "callee", "callidB": t.B, "legB": "callee", "destination": ERIN})
    env.play(ACCEPTED, t.NOTIFY_100, t.OK_A)  # notify first: destination ""
    env.mi.reply("dlg_end_dlg", "OK")
    assert env.events() == [
        ("Transferring", None),
        started(t.NEW, ERIN),
        pending(t.NEW, ERIN, "100 Trying"),
        successful(t.NEW, ERIN),
        ENDED,
    ]


def test_attended_no_destination_known() -> None:
    t = Attended
    env = attended()
    env.play(ACCEPTED, t.NOTIFY_100)
    assert env.events() == [("Transferring", None), started(t.NEW, ""), pending(t.NEW, "", "100 Trying")]


def test_attended_fail_doubled() -> None:
    t = Attended
    env = attended()
    env.play(
        ACCEPTED,
        t.START_A,
        t.START_B,
        transfer_failed(t.B, "callee", t.NEW, ERIN, "486 Busy Here"),
        transfer_failed(t.A, "callee", t.NEW, ERIN, "486 Busy Here"),
        transfer_notify(t.A, "", t.NEW, "486 Busy Here"),
    )
    assert env.events() == [
        ("Transferring", None),
        started(t.NEW, ERIN),
        error("transfer failed with status 486 Busy Here"),
        ENDED,
    ]
    assert env.mi.methods() == ["call_transfer"]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "code, message, data, text",
    [
        # e_attended_transfer_errors
        (404, "Transfer dialog not found", None, "404 Transfer dialog not found"),
        (404, "Dialog not found", None, "404 Dialog not found"),
        (
            -32000,
            "Server error",
            "Failed to handle parameter",
            "-32000 Server error (Failed to handle parameter)",
        ),
        (491, "Request Pending", None, "491 Request Pending"),
    ],
)
def test_attended_mi_error(code: int, message: str, data: str | None, text: str) -> None:
    env = attended()
    env.mi_error("call_transfer", code, message, data)
    assert env.events() == [error(text), ENDED]
    env.assert_ended_clean()


def test_attended_baresip_no_event_call_a_gone() -> None:
    # e_attended_transfer_baresip: no Replaces, no E_CALL_TRANSFER, call A ends
    t = AttendedBaresip
    env = attended({"callidA": t.A, "legA": "callee", "callidB": t.B, "legB": "callee"})
    env.play(ACCEPTED, t.OTHER_1_2, t.A_4_5)
    env.clock.advance(2)
    assert env.events() == [
        ("Transferring", None),
        error(
            f"timed out after 2 s waiting for E_CALL_TRANSFER start after the call {t.A} "
            "ended (if the transferee hung up itself, OpenSIPS may not have linked its new call)"
        ),
        ENDED,
    ]
    env.assert_ended_clean()


def test_attended_no_event_at_all() -> None:
    t = AttendedBaresip
    env = attended({"callidA": t.A, "legA": "callee", "callidB": t.B, "legB": "callee"})
    env.play(ACCEPTED)
    env.clock.advance(15)
    assert env.events() == [
        ("Transferring", None),
        error(
            "timed out after 15 s waiting for E_CALL_TRANSFER start: the REFER may have been "
            "rejected or the transferee never sent its INVITE"
        ),
        ENDED,
    ]
    env.assert_ended_clean()


def test_attended_refer_rejected_code_result() -> None:
    env = attended()
    env.mi.reply("call_transfer", {"Code": 603, "Reason": "Declined"})
    assert env.events() == [error("REFER rejected with status 603 Declined"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "params, data",
    [
        (
            {"callidA": "a", "legA": "callee", "callidB": "a", "legB": "callee"},
            "callidA and callidB must be different calls",
        ),
        ({"callidA": "a", "legA": "callee", "callidB": "b"}, "missing parameter legB"),
        (
            {"callidA": "a", "legA": "both", "callidB": "b", "legB": "callee"},
            'legA must be "caller" or "callee"',
        ),
        (
            {"callidA": "a", "legA": "callee", "callidB": "b", "legB": "callee", "destination": "x"},
            "destination is not a valid SIP URI (e.g. sip:alice@example.com)",
        ),
        (
            {"callidA": "a", "legA": "callee", "callidB": "b", "legB": "callee", "leg": "callee"},
            "unknown parameter leg",
        ),
    ],
)
def test_attended_check(params: dict[str, Any], data: str) -> None:
    with pytest.raises(RPCError) as caught:
        CallAttendedTransfer.check(params)
    assert (caught.value.code, caught.value.data) == (-32602, data)


def test_attended_check_destination_optional() -> None:
    assert CallAttendedTransfer.check(
        {"callidA": "a", "legA": "callee", "callidB": "b", "legB": "caller"}
    ) == {"callidA": "a", "legA": "callee", "callidB": "b", "legB": "caller"}
    assert "destination" not in CallAttendedTransfer.check(
        {"callidA": "a", "legA": "callee", "callidB": "b", "legB": "caller", "destination": None}
    )
