"""
L{callapi.opensips.dialog}: EVI params (3.4 README "E_DLG_STATE_CHANGED",
"E_CALL_TRANSFER", "E_CALL_HOLD") to typed events; malformed ones dropped
with one log line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

from callapi.opensips.dialog import (
    DialogState,
    DialogStateChanged,
    HoldEvent,
    HoldState,
    TransferEvent,
    TransferState,
    parse_dialog_state_changed,
    parse_hold,
    parse_transfer,
    strip_osid,
)
from callapi.testing.evi import call_transfer, dialog_state_changed


@pytest.fixture
def warnings() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            seen.append(event)

    # a plain function is an ILogObserver, but mypy cannot see that
    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def test_dialog_state_changed_from_the_trace() -> None:
    _, params = dialog_state_changed("316.43cfb051", "6679027252276", "first", "533c-8e84", "25ac", 3, 4)
    assert parse_dialog_state_changed(params) == DialogStateChanged(
        "first", "316.43cfb051", DialogState.CONFIRMED_NOT_ACKED, DialogState.CONFIRMED
    )
    _, params = dialog_state_changed("c0d.7759ce61", "14345575372151", "new", "54d2", None, 1, 5)
    event = parse_dialog_state_changed(params)
    assert event is not None and event.new_state == 5  # an IntEnum: equal to its number
    assert event.new_state is DialogState.DELETED and event.old_state == DialogState.UNCONFIRMED


@pytest.mark.parametrize(
    "junk",
    [
        {"new_state": 6},
        {"new_state": 0},
        {"new_state": "4"},
        {"new_state": True},
        {"new_state": 4.0},
        {"old_state": None},
        {"callid": 5},
        {"callid": None},
    ],
)
def test_dialog_state_changed_malformed(junk: dict[str, Any], warnings: Any) -> None:
    _, params = dialog_state_changed("1.2", "3", "first", "a", "b", 3, 4)
    assert parse_dialog_state_changed({**params, **junk}) is None
    assert len(warnings) == 1


def test_dialog_id_not_a_string_is_none() -> None:
    _, params = dialog_state_changed("1.2", "3", "first", "a", "b", 3, 4)
    event = parse_dialog_state_changed({**params, "id": 7})
    assert event is not None and event.dialog_id is None


def test_transfer_start() -> None:
    _, params = call_transfer("first", "new", "new", "sip:bob@127.0.0.1", "start", "")
    assert parse_transfer(params) == TransferEvent(
        "first", "new", TransferState.START, "sip:bob@127.0.0.1", ""
    )


def test_transfer_fail_osid_stripped() -> None:
    # c_click_to_dial_transfer_unknown_user: OpenSIPS' own 408 keeps ;osid=
    _, params = call_transfer(
        "first", "callee", "new", "sip:nobody@127.0.0.1;osid=51e.08f4fb46", "fail", "408 Request Timeout"
    )
    assert parse_transfer(params) == TransferEvent(
        "first", "new", TransferState.FAIL, "sip:nobody@127.0.0.1", "408 Request Timeout"
    )


def test_transfer_notify_without_destination_or_status() -> None:
    _, params = call_transfer("first", "", "new", "", "notify", "100 Trying")
    assert parse_transfer(params) == TransferEvent("first", "new", TransferState.NOTIFY, None, "100 Trying")
    params = {"callid": "first", "transfer_callid": "new", "state": "ok"}
    assert parse_transfer(params) == TransferEvent("first", "new", TransferState.OK, None, None)


@pytest.mark.parametrize(
    "junk",
    [
        {"state": "failure"},
        {"state": "accepted"},
        {"state": None},
        {"state": ["ok"]},
        {"transfer_callid": None},
        {"transfer_callid": 12345},
        {"callid": 1},
        {"destination": 5},
        {"destination": ["sip:x@y"]},
        {"status": 486},
    ],
)
def test_transfer_malformed(junk: dict[str, Any], warnings: Any) -> None:
    _, params = call_transfer("first", "callee", "new", "sip:bob@127.0.0.1", "fail", "486 Busy Here")
    assert parse_transfer({**params, **junk}) is None
    assert len(warnings) == 1


def test_hold() -> None:
    params = {"callid": "c", "leg": "caller", "action": "hold", "state": "start"}
    assert parse_hold(params) == HoldEvent("c", "caller", "hold", HoldState.START)
    params = {"callid": "c", "leg": "callee", "action": "unhold", "state": "fail"}
    assert parse_hold(params) == HoldEvent("c", "callee", "unhold", HoldState.FAIL)


@pytest.mark.parametrize(
    "junk",
    [
        {"leg": "both"},
        {"leg": ""},
        {"leg": None},
        {"state": "notify"},
        {"state": "failure"},
        {"state": None},
        {"action": "park"},
        {"action": None},
        {"callid": None},
        {"leg": ["caller"]},
    ],
)
def test_hold_malformed(junk: dict[str, Any], warnings: Any) -> None:
    params = {"callid": "c", "leg": "caller", "action": "hold", "state": "ok", **junk}
    assert parse_hold(params) is None
    assert len(warnings) == 1


def test_strip_osid() -> None:
    assert strip_osid("sip:a@b;osid=1.2") == "sip:a@b"
    assert strip_osid("sip:a@b;x=1") == "sip:a@b;x=1"
