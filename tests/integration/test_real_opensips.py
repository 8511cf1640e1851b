"""
Integration suite: the callapi daemon against a REAL OpenSIPS and real phones.

Skipped unless C{CALLAPI_TEST_MI} is set.  Each test starts the daemon
in-process (C{makeService} with C{--mi $CALLAPI_TEST_MI --listen
tcp:0:interface=127.0.0.1}, as C{tests/test_e2e.py} does), drives it over
WebSocket (L{callapi.testing.wsclient}), and afterwards asks OpenSIPS itself
(MI C{dlg_list}, sent through the daemon's MI socket) that no dialog of the
test's Call-IDs is left in a state below 5 (deleted), allowing a short
bounded wait for the teardown; leftovers are ended with C{dlg_end_dlg}.

Mode 1, a real OpenSIPS 3.4 or 4.0 configured like the reference harness
(C{opensips-traces/3.4/opensips.cfg}: tm, dialog with C{create_dialog()} on
every INVITE, callops, mi_datagram, event_datagram; click-to-dial INVITEs
loop through the proxy)::

    CALLAPI_TEST_MI=udp:127.0.0.1:8080 \\
    CALLAPI_TEST_CALLER=sip:alice@127.0.0.1 CALLAPI_TEST_CALLEE=sip:bob@127.0.0.1 \\
    CALLAPI_TEST_TARGET=sip:cindy@127.0.0.1 CALLAPI_TEST_BUSY=sip:busy@127.0.0.1 \\
    CALLAPI_TEST_NOANSWER=sip:noanswer@127.0.0.1 CALLAPI_TEST_UNKNOWN=sip:nobody@127.0.0.1 \\
    python -m pytest tests/integration -v

Mode 2, the OpenSIPS emulator (proves the suite itself; no OpenSIPS)::

    CALLAPI_TEST_MI=emulator python -m pytest tests/integration -v

  The conftest starts C{start_emulator(reactor, delay_scale=0.05)} and uses
  its harness phones: caller alice (C{sip:dave@127.0.0.1}, linphone, also
  works), callee bob, target cindy, busy, noanswer, unknown nobody.  Phone
  variables set in the environment still win;
  C{CALLAPI_TEST_EMULATOR_VERSION=4.0} emulates OpenSIPS 4.0,
  C{CALLAPI_TEST_EMULATOR_DELAY_SCALE} changes the speed (keep the
  noanswer ring, 120 s x scale, longer than the 3 s ring timeout below).

Environment:

  - C{CALLAPI_TEST_MI} (required): the daemon's C{--mi}, or C{emulator}.
  - Phones (each test needing one skips, naming it, when it is unset):
    C{CALLAPI_TEST_CALLER}, C{CALLAPI_TEST_CALLEE}, C{CALLAPI_TEST_TARGET}
    (auto-answer phones that follow REFER), C{CALLAPI_TEST_BUSY} (answers
    486), C{CALLAPI_TEST_NOANSWER} (rings forever), C{CALLAPI_TEST_UNKNOWN}
    (a URI the proxy answers 404).
  - C{CALLAPI_TEST_EVENTS}: the daemon's C{--events} (default automatic: an
    ephemeral UDP port on the address that reaches MI).
  - C{CALLAPI_TEST_SIP_URI}: the daemon's C{--sip-uri} (next hop of
    CallStart's INVITE).
  - C{CALLAPI_TEST_NOTIFY_DELAY_MS}: the harness script's NOTIFY knob
    (3.4 README, "the NOTIFY race"): baresip notifies before it sends the
    transfer INVITE, and when its BYE of the transferred call wins the race
    OpenSIPS raises no E_CALL_TRANSFER at all, so a transfer to a baresip
    phone can fail at random.  C{auto} (default): if the proxy has
    C{$shv(notify_delay_ms)}, set it to 300 during each test and restore it
    afterwards; C{0}/C{off}: never touch it (expect that race with baresip
    transferees); a number: use that delay.  Linphone transferees need no
    knob.

Blind transfers REFER the C{callee} leg of the call CallStart made (the
CALLEE phone calls TARGET / BUSY), as in trace
C{d_blind_transfer_callee_success}; each transfer runs on a fresh call
(OpenSIPS answers 491 to a second transfer of the same call).
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import pytest
import pytest_twisted

pytestmark = [
    pytest.mark.opensips,
    pytest.mark.skipif(
        not os.environ.get("CALLAPI_TEST_MI", "").strip(),
        reason="CALLAPI_TEST_MI is not set (udp:HOST:PORT of a real OpenSIPS, or 'emulator')",
    ),
]

CALL_START = ["CallerAnswered", "Transferring", "TransferStart", "CalleeAnswered", "Ended"]
BLIND = ["Transferring", "TransferStart", "TransferSuccessful", "Ended"]


def same_uri(a: str, b: str) -> bool:
    """Equal SIP URIs up to URI parameters (a phone may add some)."""
    return a.split(";", 1)[0] == b.split(";", 1)[0]


def without_pending(result: Any) -> list[str]:
    """The event names, TransferPending (zero or more, optional) left out."""
    return [e for e in result.events if e != "TransferPending"]


def one(result: Any, event: str) -> Any:
    """The C{data} of the single notification C{event}."""
    data = result.data(event)
    assert len(data) == 1, (event, result.notifications)
    return data[0]


async def call_start(daemon: Any) -> tuple[str, str]:
    """
    A successful CallStart CALLER -> CALLEE, checked event by event.

    @return: (Call-ID of the first call, Call-ID of the resulting call).
    """
    caller, callee = daemon.setup.phone("CALLER"), daemon.setup.phone("CALLEE")
    result = await daemon.command("CallStart", {"caller": caller, "callee": callee})
    assert "result" in result.response, result.response
    first = result.response["result"]["callid"]
    assert without_pending(result) == CALL_START, result.notifications
    assert one(result, "CallerAnswered") == {"caller": caller, "callee": callee}
    assert one(result, "Transferring") == {"caller": caller, "destination": callee}
    start = one(result, "TransferStart")
    answered = one(result, "CalleeAnswered")
    assert start == answered
    assert set(answered) == {"callid", "caller", "callee"}
    assert (answered["caller"], answered["callee"]) == (caller, callee)
    new = answered["callid"]
    assert isinstance(new, str) and new and new != first
    for pending in result.data("TransferPending"):
        assert pending["callid"] == new and "extra" in pending
    return first, new


async def confirmed_call(daemon: Any) -> tuple[str, str]:
    """
    CallStart, then wait until OpenSIPS has the new call confirmed (state
    4: the ACK of its INVITE may follow CalleeAnswered by a few ms; hold or
    transfer before that gets 410 "Dialog not ready").
    """
    first, new = await call_start(daemon)
    await daemon.wait_state(new, 4)
    return first, new


def assert_hold(result: Any, kind: str) -> None:
    """
    A complete CallHold / CallUnhold on both legs: C{Call{kind}ing} first,
    per leg C{Start} before C{Successful}, C{Ended} last, no Error.  The
    order across legs is OpenSIPS' (events are UDP datagrams).
    """
    events = result.events
    assert "Error" not in events, result.notifications
    assert events[0] == f"Call{kind}ing" and events[-1] == "Ended", events
    starts = result.data(f"Call{kind}Start")
    oks = result.data(f"Call{kind}Successful")
    assert sorted(d["leg"] for d in starts) == ["callee", "caller"], result.notifications
    assert sorted(d["leg"] for d in oks) == ["callee", "caller"], result.notifications
    names = [(n["event"], (n.get("data") or {}).get("leg")) for n in result.notifications]
    for leg in ("caller", "callee"):
        assert names.index((f"Call{kind}Start", leg)) < names.index((f"Call{kind}Successful", leg)), names
    assert len(events) == 6, events


def error_of(result: Any) -> str:
    """The single Error text of a command that ended after an Error."""
    assert result.events == ["Error", "Ended"], result.notifications
    text = one(result, "Error")
    assert isinstance(text, str)
    return text


@pytest_twisted.ensureDeferred
async def test_echo(daemon: Any) -> None:
    result = await daemon.command("Echo", {"hello": ["world", 1], "cmd_id": "echo-1"})
    assert result.response["result"] == {"cmd_id": "echo-1", "event": "Started"}
    assert result.notifications == [
        {"cmd_id": "echo-1", "event": "Reply", "data": {"hello": ["world", 1]}},
        {"cmd_id": "echo-1", "event": "Ended"},
    ]


@pytest_twisted.ensureDeferred
async def test_call_start_hold_unhold_end(daemon: Any) -> None:
    first, new = await confirmed_call(daemon)
    # CallStart ended the first call (dlg_end_dlg, or the caller's own BYE)
    await daemon.wait_gone(first)

    assert_hold(await daemon.command("CallHold", {"callid": new}), "Hold")
    assert_hold(await daemon.command("CallUnhold", {"callid": new}), "Unhold")

    end = await daemon.command("CallEnd", {"callid": new})
    assert end.events == ["Ended"], end.notifications
    await daemon.wait_gone(new)


@pytest_twisted.ensureDeferred
async def test_call_end(daemon: Any) -> None:
    _, new = await confirmed_call(daemon)
    end = await daemon.command("CallEnd", {"callid": new})
    assert end.events == ["Ended"], end.notifications
    await daemon.wait_gone(new)
    again = await daemon.command("CallEnd", {"callid": new})
    assert error_of(again).startswith("404 "), again.notifications


@pytest_twisted.ensureDeferred
async def test_blind_transfer_to_target(daemon: Any) -> None:
    target = daemon.setup.phone("TARGET")
    _, new = await confirmed_call(daemon)
    result = await daemon.command(
        "CallBlindTransfer", {"callid": new, "leg": "callee", "destination": target}
    )
    assert without_pending(result) == BLIND, result.notifications
    assert one(result, "Transferring") == {"destination": target}
    start = one(result, "TransferStart")
    success = one(result, "TransferSuccessful")
    assert start == success, result.notifications
    assert set(success) == {"callid", "destination"}
    assert same_uri(success["destination"], target), success
    third = success["callid"]
    assert third not in (new, "")
    # the transferred call is over (the transferee's BYE or callapi's dlg_end_dlg)
    await daemon.wait_gone(new)
    await daemon.wait_state(third, 4)
    end = await daemon.command("CallEnd", {"callid": third})
    assert end.events == ["Ended"], end.notifications
    await daemon.wait_gone(third)


@pytest_twisted.ensureDeferred
async def test_blind_transfer_to_busy(daemon: Any) -> None:
    busy = daemon.setup.phone("BUSY")
    _, new = await confirmed_call(daemon)
    result = await daemon.command("CallBlindTransfer", {"callid": new, "leg": "callee", "destination": busy})
    events = without_pending(result)
    assert events == ["Transferring", "TransferStart", "Error", "Ended"], result.notifications
    assert one(result, "Error").startswith("transfer failed with status 486"), result.notifications
    # A failed blind transfer leaves the call alone, but a baresip transferee
    # may hang it up itself: end it if it is still there.
    end = await daemon.command("CallEnd", {"callid": new})
    if end.events != ["Ended"]:
        assert error_of(end).startswith("404 "), end.notifications
    await daemon.wait_gone(new)


@pytest_twisted.ensureDeferred
async def test_call_start_busy_caller(daemon: Any) -> None:
    busy, callee = daemon.setup.phone("BUSY"), daemon.setup.phone("CALLEE")
    result = await daemon.command("CallStart", {"caller": busy, "callee": callee})
    assert error_of(result).startswith("486"), result.notifications
    await daemon.wait_gone(result.response["result"]["callid"])


@pytest_twisted.ensureDeferred
async def test_call_start_unknown_caller(daemon: Any) -> None:
    unknown, callee = daemon.setup.phone("UNKNOWN"), daemon.setup.phone("CALLEE")
    result = await daemon.command("CallStart", {"caller": unknown, "callee": callee})
    assert error_of(result).startswith("404"), result.notifications
    await daemon.wait_gone(result.response["result"]["callid"])


@pytest_twisted.ensureDeferred
async def test_call_start_noanswer_caller_times_out(daemon: Any) -> None:
    noanswer, callee = daemon.setup.phone("NOANSWER"), daemon.setup.phone("CALLEE")
    result = await daemon.command(
        "CallStart", {"caller": noanswer, "callee": callee, "ring_timeout": 3}, timeout=30
    )
    text = error_of(result)
    assert re.search(r"\b3 s\b", text), text  # names the ring timeout
    assert text.startswith("408"), text
    # the INVITE was cancelled: OpenSIPS deletes the early dialog (2->5)
    await daemon.wait_gone(result.response["result"]["callid"])


@pytest_twisted.ensureDeferred
async def test_call_hold_unknown_callid(daemon: Any) -> None:
    callid = f"callapi-test-{uuid.uuid4()}"
    result = await daemon.command("CallHold", {"callid": callid})
    assert error_of(result) == "404 Dialog not found"
