"""
End-to-end, over real loopback sockets against the OpenSIPS emulator:
click-to-dial (CallStart) and blind/attended transfers, every success and
failure path, with the exact notification sequence a client sees.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from callapi.emulator import Phone
from callapi.testing.daemon import DaemonHarness, start_daemon, until

ALICE, BOB, CINDY = "sip:alice@127.0.0.1", "sip:bob@127.0.0.1", "sip:cindy@127.0.0.1"
DAVE, ERIN = "sip:dave@127.0.0.1", "sip:erin@127.0.0.1"
BUSY, NOBODY = "sip:busy@127.0.0.1", "sip:nobody@127.0.0.1"


def pairs(result: Any) -> list[tuple[str, Any]]:
    return [(n["event"], n.get("data")) for n in result.notifications]


def dialog_ended(daemon: DaemonHarness, callid: str) -> bool:
    dialog = daemon.emu.dialogs.get(callid)
    return dialog is None or dialog.state == 5


# CallStart


@pytest_twisted.ensureDeferred
async def test_click_to_dial_baresip(daemon: DaemonHarness) -> None:
    """
    Trace a_click_to_dial_success: start, ok, no notify (NOTIFY race); the
    first dialog is ended through the proxy.
    """
    client = await daemon.client()
    result = await client.command("CallStart", {"caller": ALICE, "callee": BOB})
    first = result.response["result"]["callid"]
    new = result.data("TransferStart")[0]["callid"]
    people = {"caller": ALICE, "callee": BOB}
    assert pairs(result) == [
        ("CallerAnswered", people),
        ("Transferring", {"caller": ALICE, "destination": BOB}),
        ("TransferStart", {"callid": new, **people}),
        ("CalleeAnswered", {"callid": new, **people}),
        ("Ended", None),
    ]
    assert new != first
    await until(daemon.reactor, lambda: dialog_ended(daemon, first))
    assert daemon.emu.dialogs[new].state == 4
    end = await client.command("CallEnd", {"callid": new})
    assert pairs(end) == [("Ended", None)]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_click_to_dial_linphone_with_notify(daemon: DaemonHarness) -> None:
    """
    Trace a_click_to_dial_success_linphone: start, ok, notifies; the
    notify that comes after ok is not reported.
    """
    client = await daemon.client()
    result = await client.command("CallStart", {"caller": DAVE, "callee": BOB})
    assert result.events[:3] == ["CallerAnswered", "Transferring", "TransferStart"]
    assert result.events[-2:] == ["CalleeAnswered", "Ended"]
    assert set(result.events[3:-2]) <= {"TransferPending"}
    for data in result.data("TransferPending"):
        assert data["extra"] in ("100 Trying", "200 Ok")
    first = result.response["result"]["callid"]
    # linphone keeps the first call: callapi ends it with dlg_end_dlg
    await until(daemon.reactor, lambda: dialog_ended(daemon, first))
    client.sendClose()


@pytest.mark.parametrize(
    "caller, status",
    [
        (BUSY, "486 Busy Here"),
        (NOBODY, "404 User Not Found"),
        ("sip:offline@127.0.0.1", "408 Request Timeout"),
        ("sip:noanswer@127.0.0.1", "408 Request Timeout"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_click_to_dial_caller_fails(daemon: DaemonHarness, caller: str, status: str) -> None:
    """
    Traces b_click_to_dial_busy/_unknown_user/_offline/_noanswer: the
    t_uac_dlg result's Status is the Error.
    """
    client = await daemon.client()
    result = await client.command("CallStart", {"caller": caller, "callee": BOB})
    assert pairs(result) == [("Error", status), ("Ended", None)]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_click_to_dial_callee_busy_ends_the_caller(daemon: DaemonHarness) -> None:
    """
    Trace c_click_to_dial_transfer_rejected: E_CALL_TRANSFER fail; the
    caller, who answered, is hung up instead of sitting in a dead call.
    """
    client = await daemon.client()
    result = await client.command("CallStart", {"caller": ALICE, "callee": BUSY})
    first = result.response["result"]["callid"]
    assert result.events == ["CallerAnswered", "Transferring", "TransferStart", "Error", "Ended"]
    assert result.data("Error") == ["transfer failed with status 486 Busy Here"]
    await until(daemon.reactor, lambda: dialog_ended(daemon, first))
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_click_to_dial_callee_unknown(daemon: DaemonHarness) -> None:
    """
    Trace c_click_to_dial_transfer_unknown_user: start and fail "408
    Request Timeout" arrive before the "Accepted" reply.
    """
    client = await daemon.client()
    result = await client.command("CallStart", {"caller": ALICE, "callee": NOBODY})
    assert result.events == ["CallerAnswered", "Transferring", "TransferStart", "Error", "Ended"]
    assert result.data("Error") == ["transfer failed with status 408 Request Timeout"]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_click_to_dial_no_transfer_event_times_out(reactor: Any) -> None:
    """
    Trace d_blind_transfer_refer_rejected: the REFER is refused, OpenSIPS
    says "Accepted" and raises nothing: Error naming the timeout, never a hang.
    """
    daemon = await start_daemon(reactor, "--transfer-start-timeout", "0.3")
    try:
        daemon.emu.add_phone("sip:norefer@127.0.0.1", Phone.baresip(refer="reject"))
        client = await daemon.client()
        result = await client.command("CallStart", {"caller": "sip:norefer@127.0.0.1", "callee": BOB})
        assert result.events == ["CallerAnswered", "Transferring", "Error", "Ended"]
        error = result.data("Error")[0]
        assert error.startswith("timed out after 0.3 s waiting for E_CALL_TRANSFER start")
        client.sendClose()
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_click_to_dial_ring_timeout_cancels(reactor: Any) -> None:
    """
    The caller rings past ring_timeout: the INVITE is cancelled
    (t_uac_cancel) and the Error carries 408 and the timeout.
    """
    daemon = await start_daemon(reactor, delay_scale=1.0)  # a phone that really rings
    try:
        daemon.emu.add_phone("sip:ringer@127.0.0.1", Phone.sipp(answer="noanswer"))
        client = await daemon.client()
        result = await client.command(
            "CallStart", {"caller": "sip:ringer@127.0.0.1", "callee": BOB, "ring_timeout": 0.3}
        )
        first = result.response["result"]["callid"]
        assert pairs(result) == [
            (
                "Error",
                "408 Request Timeout: sip:ringer@127.0.0.1 did not answer within 0.3 s (INVITE cancelled)",
            ),
            ("Ended", None),
        ]
        await until(reactor, lambda: dialog_ended(daemon, first))
        client.sendClose()
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_call_end_while_ringing(reactor: Any) -> None:
    """
    CallEnd on the Call-ID from CallStart's Started result while the caller
    rings: the proxy CANCELs; CallStart ends with an Error.
    """
    daemon = await start_daemon(reactor, delay_scale=1.0)  # a phone that really rings
    try:
        daemon.emu.add_phone("sip:ringer@127.0.0.1", Phone.sipp(answer="noanswer"))
        client = await daemon.client()
        start = client.command("CallStart", {"caller": "sip:ringer@127.0.0.1", "callee": BOB})
        await until(reactor, lambda: any(d.state == 2 for d in daemon.emu.dialogs.values()))
        first = next(c for c, d in daemon.emu.dialogs.items() if d.state == 2)
        end = await client.command("CallEnd", {"callid": first})
        assert pairs(end) == [("Ended", None)]
        result = await start
        assert result.events == ["Error", "Ended"]
        assert result.data("Error")[0].startswith("487 Request Terminated")
        client.sendClose()
    finally:
        await daemon.stop()


# Blind transfer


@pytest_twisted.ensureDeferred
async def test_blind_transfer_callee_success(daemon: DaemonHarness) -> None:
    """
    Trace d_blind_transfer_callee_success: start (junk leg), ok; bob hangs
    up the old call himself, so the dlg_end_dlg 404 is not an error.
    """
    callid = await daemon.call("alice", "bob")
    client = await daemon.client()
    result = await client.command(
        "CallBlindTransfer", {"callid": callid, "leg": "callee", "destination": CINDY}
    )
    new = result.data("TransferStart")[0]["callid"]
    assert pairs(result) == [
        ("Transferring", {"destination": CINDY}),
        ("TransferStart", {"callid": new, "destination": CINDY}),
        ("TransferSuccessful", {"callid": new, "destination": CINDY}),
        ("Ended", None),
    ]
    await until(daemon.reactor, lambda: dialog_ended(daemon, callid))
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_blind_transfer_linphone_ends_old_call(daemon: DaemonHarness) -> None:
    """
    Trace d_blind_transfer_callee_success_linphone: dave keeps the old call;
    callapi ends it through the proxy after success.
    """
    callid = await daemon.call("alice", "dave")
    client = await daemon.client()
    result = await client.command(
        "CallBlindTransfer", {"callid": callid, "leg": "callee", "destination": CINDY}
    )
    assert result.events[0:2] == ["Transferring", "TransferStart"]
    assert result.events[-2:] == ["TransferSuccessful", "Ended"]
    await until(daemon.reactor, lambda: dialog_ended(daemon, callid))
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_blind_transfer_busy_keeps_the_call(daemon: DaemonHarness) -> None:
    """
    Trace d_blind_transfer_failure: fail "486 Busy Here"; the original call
    is left as it was; a second transfer of it gets 491 (both versions).
    """
    callid = await daemon.call("alice", "dave")
    client = await daemon.client()
    result = await client.command(
        "CallBlindTransfer", {"callid": callid, "leg": "callee", "destination": BUSY}
    )
    assert result.events[:2] == ["Transferring", "TransferStart"]
    assert result.events[-2:] == ["Error", "Ended"]
    assert result.data("Error") == ["transfer failed with status 486 Busy Here"]
    assert daemon.emu.dialogs[callid].state == 4
    again = await client.command(
        "CallBlindTransfer", {"callid": callid, "leg": "callee", "destination": CINDY}
    )
    assert pairs(again) == [("Error", "491 Request Pending"), ("Ended", None)]
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_blind_transfer_errors(daemon: DaemonHarness) -> None:
    """
    Trace d_blind_transfer_errors: unknown Call-ID -> 404; bad leg and bad
    destination are refused before any MI request.
    """
    client = await daemon.client()
    unknown = await client.command(
        "CallBlindTransfer", {"callid": "no-such@x", "leg": "callee", "destination": CINDY}
    )
    assert pairs(unknown) == [("Error", "404 Dialog not found"), ("Ended", None)]
    sent = daemon.opensips.mi.stats["sent"]
    both = await client.command("CallBlindTransfer", {"callid": "x", "leg": "both", "destination": CINDY})
    assert both.response["error"] == {
        "code": -32602,
        "message": "Invalid params",
        "data": 'leg must be "caller" or "callee"',
    }
    header = await client.command(
        "CallBlindTransfer", {"callid": "x", "leg": "caller", "destination": "sip:cindy@127.0.0.1?Subject=x"}
    )
    assert header.response["error"]["code"] == -32602
    assert "destination" in header.response["error"]["data"]
    missing = await client.command("CallBlindTransfer", {"callid": "x", "leg": "caller"})
    assert missing.response["error"]["data"] == "missing parameter destination"
    assert daemon.opensips.mi.stats["sent"] == sent
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_blind_transfer_refer_rejected_times_out(reactor: Any) -> None:
    daemon = await start_daemon(reactor, "--transfer-start-timeout", "0.3")
    try:
        daemon.emu.add_phone("sip:norefer@127.0.0.1", Phone.baresip(refer="reject"))
        callid = await daemon.call("alice", "norefer")
        client = await daemon.client()
        result = await client.command(
            "CallBlindTransfer", {"callid": callid, "leg": "callee", "destination": CINDY}
        )
        assert result.events == ["Transferring", "Error", "Ended"]
        assert result.data("Error")[0].startswith("timed out after 0.3 s")
        assert daemon.emu.dialogs[callid].state == 4
        client.sendClose()
    finally:
        await daemon.stop()


# Attended transfer


@pytest_twisted.ensureDeferred
async def test_attended_transfer(daemon: DaemonHarness) -> None:
    """
    Trace e_attended_transfer: every state raised for both Call-IDs is
    reported once; call A is ended after success.
    """
    a = await daemon.call("alice", "dave")
    b = await daemon.call("alice", "erin")
    client = await daemon.client()
    result = await client.command(
        "CallAttendedTransfer", {"callidA": a, "legA": "callee", "callidB": b, "legB": "callee"}
    )
    assert result.events[0:2] == ["Transferring", "TransferStart"]
    assert result.events[-2:] == ["TransferSuccessful", "Ended"]
    assert result.events.count("TransferStart") == 1
    assert result.events.count("TransferSuccessful") == 1
    new = result.data("TransferStart")[0]["callid"]
    assert result.data("TransferSuccessful") == [{"callid": new, "destination": ERIN}]
    await until(daemon.reactor, lambda: dialog_ended(daemon, a))
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_attended_transfer_errors(daemon: DaemonHarness) -> None:
    """
    Trace e_attended_transfer_errors: 404 "Transfer dialog not found".
    """
    a = await daemon.call("alice", "dave")
    client = await daemon.client()
    result = await client.command(
        "CallAttendedTransfer", {"callidA": a, "legA": "callee", "callidB": "gone@x", "legB": "callee"}
    )
    assert pairs(result) == [("Error", "404 Transfer dialog not found"), ("Ended", None)]
    same = await client.command(
        "CallAttendedTransfer", {"callidA": a, "legA": "callee", "callidB": a, "legB": "caller"}
    )
    assert same.response["error"]["code"] == -32602
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_call_start_validation(daemon: DaemonHarness) -> None:
    client = await daemon.client()
    sent = daemon.opensips.mi.stats["sent"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"caller": "alice", "callee": BOB}, "caller is not a valid SIP URI (e.g. sip:alice@example.com)"),
        ({"caller": ALICE}, "missing parameter callee"),
        (
            {"caller": ALICE, "callee": "sip:bob@x\r\nVia: evil"},
            "callee is not a valid SIP URI (e.g. sip:alice@example.com)",
        ),
        (
            {"caller": ALICE, "callee": BOB, "ring_timeout": 0},
            "ring_timeout must be a number of seconds, 0 < ring_timeout <= 600",
        ),
        ({"caller": ALICE, "callee": BOB, "extra": 1}, "unknown parameter extra"),
    ]
    for params, data in cases:
        result = await client.command("CallStart", params)
        assert result.response["error"] == {"code": -32602, "message": "Invalid params", "data": data}
    assert daemon.opensips.mi.stats["sent"] == sent
    client.sendClose()


# OpenSIPS 4.0


@pytest_twisted.ensureDeferred
async def test_opensips_40_names_and_per_leg_hold(reactor: Any) -> None:
    """
    Against the 4.0 emulator: the daemon learns the module:cmd names from
    `which` (4.0 README "MI command names") and accepts `leg` on holds
    (4.0 README "callops:hold"); both legs are still re-INVITEd.
    """
    daemon = await start_daemon(reactor, emulator_version="4.0")
    try:
        names = daemon.opensips.names
        assert (names.family, names.hold, names.transfer, names.subscribe) == (
            "4.0",
            "callops:hold",
            "callops:transfer",
            "evi:subscribe",
        )
        callid = await daemon.call("alice", "bob")
        client = await daemon.client()
        hold = await client.command("CallHold", {"callid": callid, "leg": "caller"})
        assert hold.events == [
            "CallHolding",
            "CallHoldStart",
            "CallHoldStart",
            "CallHoldSuccessful",
            "CallHoldSuccessful",
            "Ended",
        ]
        unhold = await client.command("CallUnhold", {"callid": callid, "leg": "caller"})
        assert unhold.events[-1] == "Ended" and "Error" not in unhold.events
        bad = await client.command("CallHold", {"callid": callid, "leg": "both"})
        assert bad.response["error"]["code"] == -32602
        start = await client.command("CallStart", {"caller": ALICE, "callee": BOB})
        assert start.events[-2:] == ["CalleeAnswered", "Ended"]
        client.sendClose()
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_opensips_34_refuses_per_leg_hold(daemon: DaemonHarness) -> None:
    assert daemon.opensips.names.family == "3.x"
    client = await daemon.client()
    sent = daemon.opensips.mi.stats["sent"]
    result = await client.command("CallHold", {"callid": "abc", "leg": "callee"})
    assert result.response["error"] == {
        "code": -32602,
        "message": "Invalid params",
        "data": "leg needs per-leg hold (OpenSIPS 4.0 callops); this OpenSIPS does not support it",
    }
    assert daemon.opensips.mi.stats["sent"] == sent
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_call_start_callid_is_the_generated_cmd_id(daemon: DaemonHarness) -> None:
    """
    Go Call API clients end a ringing click-to-dial call with
    CallEnd callid=<cmd_id>: without a client cmd_id, the first call's
    Call-ID is the generated cmd_id; a client-chosen cmd_id is never used
    as a Call-ID.
    """
    client = await daemon.client()
    plain = await client.command("CallStart", {"caller": ALICE, "callee": BOB})
    assert plain.response["result"]["callid"] == plain.response["result"]["cmd_id"]
    chosen = await client.command("CallStart", {"caller": ALICE, "callee": BOB}, cmd_id="mine")
    assert chosen.response["result"]["cmd_id"] == "mine"
    assert chosen.response["result"]["callid"] != "mine"
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_call_end_while_transferring(reactor: Any) -> None:
    """
    CallEnd on the new call while the callee still rings (sipp `slow`
    answers after 3 s): the proxy CANCELs it, the transfer fails, and
    CallStart ends the caller's call too, so nothing is left up.
    """
    daemon = await start_daemon(reactor, delay_scale=1.0)
    try:
        client = await daemon.client()
        start = client.command("CallStart", {"caller": ALICE, "callee": "sip:slow@127.0.0.1"})

        def transfer_started() -> Any:
            return next(
                (
                    m["params"]["data"]["callid"]
                    for m in client.received
                    if isinstance(m, dict) and m.get("params", {}).get("event") == "TransferStart"
                ),
                None,
            )

        await until(reactor, lambda: transfer_started() is not None)
        end = await client.command("CallEnd", {"callid": transfer_started()})
        assert pairs(end) == [("Ended", None)]
        result = await start
        first = result.response["result"]["callid"]
        assert result.events[:3] == ["CallerAnswered", "Transferring", "TransferStart"]
        assert result.events[-2:] == ["Error", "Ended"]
        # behaviour change (issue 7): CallEnd tells the owning CallStart at once
        assert result.data("Error")[0].startswith("487 Request Terminated: call ")
        await until(reactor, lambda: dialog_ended(daemon, first))
        await until(reactor, lambda: dialog_ended(daemon, transfer_started()))
        client.sendClose()
    finally:
        await daemon.stop()
