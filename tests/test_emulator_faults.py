"""
Unit tests of the emulator's C{dlg_end_dlg} lookup order and its fault
injection (L{callapi.emulator.faults}): MI datagram loss, lost events, the
OpenSIPS restart, the baresip NOTIFY race, a transfer target that never
answers.  On a L{Clock}, with the harness of C{tests/test_emulator.py}.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from callapi.emulator import OpenSIPSEmulator
from callapi.emulator.cli import build_parser, faults_from_args
from callapi.emulator.faults import Faults
from callapi.emulator.sip import parse_dialog_id
from tests.test_emulator import ALICE, BOB, CINDY, DAVE, ERIN, SOCK, Harness, summary, xfers

NOANSWER = "sip:noanswer@127.0.0.1"
CTIME = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}$")


@pytest.fixture
def h() -> Harness:
    return Harness("3.4")


def dlg_events(h: Harness) -> list[str]:
    return [s for s in summary(h.timeline) if s.startswith("dlg ")]


# ---------------------------------------------------------------------------
# dlg_end_dlg dialog_id: internal ID first, then Call-ID (dlg_hash.c)
# ---------------------------------------------------------------------------


def test_parse_dialog_id_as_opensips() -> None:
    """parse_dlg_did + reverse_hex2int: least significant digit first, any case,
    empty parts are 0, split at the first dot, 32-bit wrap."""
    assert parse_dialog_id("a0d.3eac7013") == (0xD0A, 0x3107CAE3)
    assert parse_dialog_id("A0D0.3EAC7013") == (0xD0A, 0x3107CAE3)
    assert parse_dialog_id(".") == (0, 0)
    assert parse_dialog_id("123.456") == (0x321, 0x654)
    assert parse_dialog_id("fffffffff.1") == (0xFFFFFFFF, 1)
    for text in ("6c93c431e29d3500", "1.2.3", "x.1", "1.g", "12345-678@127.0.0.1"):
        assert parse_dialog_id(text) is None


@pytest.mark.parametrize("version", ["3.4", "4.0"])
def test_dialog_id_collision_ends_the_dialog_with_that_id_first(version: str) -> None:
    """A Call-ID shaped like another live dialog's ID: dlg_end_dlg ends the
    dialog that has the ID; once that one is deleted, the same value falls
    back to the Call-ID (get_dlg_by_dialog_id, lookup_dlg active_only)."""
    h = Harness(version)
    first = h.add_call(ALICE, BOB)
    did = h.emu.dialogs[first].dialog_id
    second = h.emu.add_call(CINDY, DAVE, callid=did)
    h.pump(0.5)
    assert h.emu.dialogs[second].state == 4
    h.take()
    assert h.result(h.n("dlg_end_dlg"), {"dialog_id": did}) == "OK"
    assert dlg_events(h) == [f"dlg {first} 4->5"]
    assert h.emu.dialogs[second].state == 4
    h.take()
    assert h.result(h.n("dlg_end_dlg"), {"dialog_id": did}) == "OK"
    assert dlg_events(h) == [f"dlg {second} 4->5"]
    assert h.error(h.n("dlg_end_dlg"), {"dialog_id": did}) == {
        "code": 404,
        "message": "Requested Dialog not found",
    }
    assert h.emu.live_dialogs() == []


def test_dialog_id_shape_without_such_id_is_a_call_id(h: Harness) -> None:
    """An ID-shaped value that no dialog has as ID is looked up as Call-ID."""
    callid = h.emu.add_call(ALICE, BOB, callid="123.456")
    h.pump(0.5)
    h.take()
    assert h.result("dlg_end_dlg", {"dialog_id": "123.456"}) == "OK"
    assert dlg_events(h) == [f"dlg {callid} 4->5"]


def test_dialog_id_any_case_and_padding(h: Harness) -> None:
    """reverse_hex2int reads either case; a trailing 0 is a leading zero."""
    callid = h.add_call()
    did = h.emu.dialogs[callid].dialog_id
    entry, hid = did.split(".")
    h.take()
    assert h.result("dlg_end_dlg", {"dialog_id": f"{entry.upper()}0.{hid}"}) == "OK"
    assert dlg_events(h) == [f"dlg {callid} 4->5"]


# ---------------------------------------------------------------------------
# uptime (3.4/README.md "uptime (a liveness probe ...)")
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "methods"), [("3.4", ["uptime"]), ("4.0", ["uptime", "core:uptime"])])
def test_uptime_shape(version: str, methods: list[str]) -> None:
    h = Harness(version)
    h.pump(7)
    for method in methods:
        result = h.result(method)
        assert list(result) == ["Now", "Up since", "Up time"]
        assert CTIME.match(result["Now"]) and CTIME.match(result["Up since"])
        up = int(result["Up time"].split()[0])
        assert result["Up time"] == f"{up} [sec]" and up >= 7


# ---------------------------------------------------------------------------
# MI datagram loss
# ---------------------------------------------------------------------------


def test_faults_off_by_default_and_validated() -> None:
    f = Faults()
    assert (f.mi_request_loss, f.mi_reply_loss, f.event_loss, f.notify_race, f.restart_every) == (0,) * 5
    assert f.event_loss_only is None and f.restart_forget_dialogs is True and f.restart_downtime == 2.0
    for bad in ({"mi_request_loss": 101}, {"event_loss": -1}, {"restart_downtime": -1}):
        with pytest.raises(ValueError):
            Faults(**bad)  # type: ignore[arg-type]


def test_request_loss_drops_request_without_effect() -> None:
    h = Harness(subscribe=False, faults=Faults(mi_request_loss=100))
    out = h.send("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK})
    h.pump(1)
    assert out == [] and h.emu.subscribers == {}
    assert h.emu.fault_counts["mi_request"] == 1


def test_reply_loss_drops_reply_after_the_effect() -> None:
    h = Harness(subscribe=False, faults=Faults(mi_reply_loss=100))
    out = h.send("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK})
    h.pump(1)
    assert out == [] and ("E_CALL_HOLD", SOCK) in h.emu.subscribers
    assert h.emu.fault_counts == {"mi_request": 0, "mi_reply": 1, "event": 0, "notify_race": 0}


def _loss_pattern(seed: int) -> list[bool]:
    h = Harness(subscribe=False, faults=Faults(mi_request_loss=30, mi_reply_loss=30, seed=seed))
    return [bool(h.send("version")) for _ in range(200)]


def test_loss_is_deterministic_under_a_seed_and_about_the_rate() -> None:
    a, b, c = _loss_pattern(1), _loss_pattern(1), _loss_pattern(2)
    assert a == b and a != c
    answered = sum(a)
    # 0.7 * 0.7 = 49 % answered
    assert 70 < answered < 130


def test_faults_do_not_change_generated_ids() -> None:
    """The draws come from their own generator: Call-IDs and tags are the
    same with or without faults."""
    plain = Harness()
    lossy = Harness(faults=Faults(event_loss=50, seed=9))
    assert plain.add_call() == lossy.add_call()


def test_faults_can_be_changed_mid_run() -> None:
    h = Harness(subscribe=False, faults=Faults(mi_request_loss=100))
    assert h.send("version") == []
    h.emu.faults = Faults()
    assert h.send("version") != []


# ---------------------------------------------------------------------------
# lost events
# ---------------------------------------------------------------------------


def test_event_loss_only_one_event() -> None:
    h = Harness(faults=Faults(event_loss=100, event_loss_only="E_DLG_STATE_CHANGED"))
    callid = h.add_call()
    assert h.emu.dialogs[callid].state == 4 and dlg_events(h) == []
    h.result("call_hold", {"callid": callid})
    assert [e["state"] for e in h.events("E_CALL_HOLD")] == ["start", "start", "ok", "ok"]
    assert h.emu.fault_counts["event"] == 3


def test_event_loss_any_event_deterministic() -> None:
    def run() -> list[str]:
        h = Harness(faults=Faults(event_loss=50, seed=4))
        for _ in range(10):
            h.add_call()
        return summary(h.timeline)

    first = run()
    assert first == run() and 0 < len(first) < 30


# ---------------------------------------------------------------------------
# OpenSIPS restart
# ---------------------------------------------------------------------------


def test_restart_forgets_subscriptions_and_dialogs_and_changes_up_since() -> None:
    h = Harness()
    h.pump(10)
    before = h.result("uptime")
    callid = h.add_call()
    ringing = h.emu.add_call(ALICE, NOANSWER)
    h.pump(0.1)
    h.take()
    h.emu.restart(forget_dialogs=True, downtime=3)
    assert not h.emu.up
    assert h.send("uptime") == [] and h.send("dlg_list") == []
    with pytest.raises(RuntimeError):
        h.emu.add_call(ALICE, BOB)
    h.pump(2.9)
    assert h.send("uptime") == []
    h.pump(0.2)
    assert h.emu.up and h.emu.restarts == 1
    after = h.result("uptime")
    assert after["Up since"] != before["Up since"] and after["Up time"] == "0 [sec]"
    assert h.emu.subscribers == {} and h.emu.live_dialogs() == [] and h.emu.dialogs == {}
    assert h.result("dlg_list") == {"Dialogs": []}
    assert h.error("dlg_end_dlg", {"dialog_id": callid})["code"] == 404
    h.take()
    h.pump(200)
    # the ringing call's transaction died with the process: nothing more
    assert h.take() == [] and h.emu.pending_calls == 0 and ringing not in h.emu.dialogs
    # subscribers must subscribe again
    h.result("event_subscribe", {"event": "E_DLG_STATE_CHANGED", "socket": SOCK})
    new = h.add_call()
    assert dlg_events(h)[-1] == f"dlg {new} 3->4"


def test_restart_keeping_dialogs_keeps_confirmed_ones() -> None:
    h = Harness(faults=Faults(restart_forget_dialogs=False, restart_downtime=1))
    callid = h.add_call()
    h.emu.add_call(ALICE, NOANSWER)
    h.pump(0.1)
    h.emu.restart()
    h.pump(1.5)
    assert [(c, s) for c, _, s in h.emu.live_dialogs()] == [(callid, 4)]
    h.result("event_subscribe", {"event": "E_DLG_STATE_CHANGED", "socket": SOCK})
    h.take()
    assert h.result("dlg_end_dlg", {"dialog_id": callid}) == "OK"
    assert dlg_events(h) == [f"dlg {callid} 4->5"]


def test_pending_reply_is_never_sent_after_a_restart() -> None:
    """A t_uac_dlg waiting for its answer when OpenSIPS restarts never gets one."""
    h = Harness(faults=Faults(restart_downtime=0.5))
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": "sip:slow@127.0.0.1",
            "headers": (
                "From: <sip:x@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\nCall-Id: c2d@x\r\n"
                "Content-Type: application/sdp\r\n"
            ),
            "body": "v=0\r\n",
        },
    )
    h.pump(1)
    h.emu.restart()
    h.pump(200)
    assert out == [] and h.emu.live_dialogs() == []


def test_restart_every() -> None:
    h = Harness(faults=Faults(restart_every=60, restart_downtime=5))
    h.pump(59.7)  # the harness ran 0.15 s subscribing
    assert h.emu.up and h.emu.restarts == 0
    h.pump(0.2)
    assert not h.emu.up and h.emu.restarts == 1
    h.pump(5)
    assert h.emu.up
    h.pump(60)
    assert h.emu.restarts == 2
    h.emu.stop()
    assert h.clock.getDelayedCalls() == []


def test_restart_while_down_is_ignored(h: Harness) -> None:
    h.emu.restart(downtime=5)
    h.emu.restart(downtime=50)
    h.pump(5.1)
    assert h.emu.up and h.emu.restarts == 1


# ---------------------------------------------------------------------------
# the NOTIFY race (3.4/README.md, 3.4/d_blind_transfer_caller_success)
# ---------------------------------------------------------------------------


def _assert_race(h: Harness, old: str) -> str:
    assert xfers(h) == []
    dlgs = dlg_events(h)
    assert dlgs[0] == f"dlg {old} 4->5"
    new = dlgs[1].split()[1]
    assert new != old and dlgs[1:] == [f"dlg {new} 1->2", f"dlg {new} 2->3", f"dlg {new} 3->4"]
    assert [(c, s) for c, _, s in h.emu.live_dialogs()] == [(new, 4)]
    return new


def test_notify_race_blind_transfer() -> None:
    h = Harness(faults=Faults(notify_race=100))
    callid = h.add_call()
    h.take()
    assert (
        h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}, wait=1)
        == "Accepted"
    )
    new = _assert_race(h, callid)
    assert h.emu.dialogs[new].to_uri.startswith(CINDY + ";osid=") and h.emu.fault_counts["notify_race"] == 1


def test_notify_race_click_to_dial_transfer() -> None:
    """CallStart's transfer: the click-to-dial callee (baresip alice) is the transferee."""
    h = Harness(faults=Faults(notify_race=100))
    h.click_to_dial(ALICE, "c2d-race@x")
    h.take()
    assert (
        h.result("call_transfer", {"callid": "c2d-race@x", "leg": "callee", "destination": BOB}, wait=1)
        == "Accepted"
    )
    _assert_race(h, "c2d-race@x")


def test_notify_race_not_for_linphone_nor_with_the_knob() -> None:
    h = Harness(faults=Faults(notify_race=100))
    callid = h.add_call(ALICE, DAVE)
    h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": ERIN}, wait=1)
    assert [x[3] for x in xfers(h)][:2] == ["start", "ok"]
    h.take()
    h.result("shv_set", {"name": "notify_delay_ms", "type": "int", "value": 100})
    other = h.add_call()
    h.result("call_transfer", {"callid": other, "leg": "callee", "destination": CINDY}, wait=1)
    assert [x[3] for x in xfers(h)] == ["start", "ok", "notify", "notify"]
    assert h.emu.fault_counts["notify_race"] == 0


def test_notify_race_percentage_is_seeded() -> None:
    def run() -> list[int]:
        h = Harness(faults=Faults(notify_race=50, seed=5))
        out = []
        for _ in range(20):
            callid = h.add_call()
            h.take()
            h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}, wait=1)
            out.append(len(xfers(h)))
        return out

    first = run()
    assert first == run() and set(first) == {0, 2}


# ---------------------------------------------------------------------------
# a transfer target that never answers
# ---------------------------------------------------------------------------


def _transfer_to_noanswer(h: Harness) -> tuple[str, str]:
    callid = h.add_call()
    h.take()
    h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": NOANSWER}, wait=1)
    new = h.events("E_CALL_TRANSFER")[0]["transfer_callid"]
    h.take()
    return callid, new


def test_transfer_to_noanswer_rings_until_fr_inv_timeout(h: Harness) -> None:
    callid, new = _transfer_to_noanswer(h)
    h.pump(110)
    assert h.take() == [] and h.emu.dialogs[new].state == 2
    h.pump(15)
    assert summary(h.take()) == [
        f"dlg {new} 2->5",
        f"xfer {callid} callee fail 408 Request Timeout",
    ]
    assert h.emu.live_dialogs() == [] and h.emu.pending_calls == 0


def test_transfer_to_noanswer_cancelled_by_dlg_end_dlg(h: Harness) -> None:
    """dlg_end_dlg on the early dialog: CANCEL to the callee, 2->5
    (3.4/g_dlg_end_dlg "early dialog (CANCEL)"), and callops' fail 487."""
    callid, new = _transfer_to_noanswer(h)
    h.pump(30)
    assert h.result("dlg_end_dlg", {"dialog_id": new}) == "OK"
    assert summary(h.take()) == [
        'reply "OK"',
        f"dlg {new} 2->5",
        f"xfer {callid} callee fail 487 Request Terminated",
    ]
    h.pump(200)
    assert h.take() == [] and h.emu.live_dialogs() == [] and h.emu.pending_calls == 0


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------


def test_cli_fault_options() -> None:
    args = build_parser().parse_args(
        [
            "--mi-request-loss",
            "20",
            "--mi-reply-loss",
            "10",
            "--event-loss",
            "5",
            "--event-loss-only",
            "E_DLG_STATE_CHANGED",
            "--notify-race",
            "3.3",
            "--restart-every",
            "60",
            "--restart-downtime",
            "4",
            "--restart-keep-dialogs",
            "--fault-seed",
            "7",
        ]
    )
    assert faults_from_args(args) == Faults(
        mi_request_loss=20,
        mi_reply_loss=10,
        event_loss=5,
        event_loss_only="E_DLG_STATE_CHANGED",
        notify_race=3.3,
        restart_every=60,
        restart_downtime=4,
        restart_forget_dialogs=False,
        seed=7,
    )
    assert faults_from_args(build_parser().parse_args([])) == Faults()


def test_emulator_constructor_takes_faults() -> None:
    sent: list[Any] = []
    from twisted.internet.task import Clock

    emu = OpenSIPSEmulator(Clock(), lambda s, d: sent.append(d), faults=Faults(mi_reply_loss=100))
    replies: list[bytes] = []
    emu.handle_datagram(json.dumps({"jsonrpc": "2.0", "method": "version", "id": 1}).encode(), replies.append)
    assert replies == [] and emu.faults.mi_reply_loss == 100
