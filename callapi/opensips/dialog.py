"""
Typed EVI events: the params of E_DLG_STATE_CHANGED, E_CALL_TRANSFER and
E_CALL_HOLD (JSON objects from OpenSIPS' C{event_datagram}) turned into
frozen values, so that the call flows of L{callapi.scenarios} see
semantic inputs, never raw wire dicts.

Each C{parse_*} function validates the members a flow relies on and
returns C{None} (after one C{warn} log line) for a malformed event: a
non-string Call-ID, an unknown state, a non-string C{destination}.

Field names and JSON types: 3.4 README "E_DLG_STATE_CHANGED",
"E_CALL_TRANSFER", "E_CALL_HOLD" (identical in 4.0, 4.0 README "Events").
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from callapi.logging import logger

_log = logger("callapi.opensips.dialog")


class DialogState(enum.IntEnum):
    """
    The dialog module's states, as E_DLG_STATE_CHANGED C{old_state} /
    C{new_state} numbers (3.4 README "E_DLG_STATE_CHANGED").
    """

    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NOT_ACKED = 3
    CONFIRMED = 4
    DELETED = 5


class TransferState(enum.Enum):
    """
    E_CALL_TRANSFER C{state}: C{start} (the new INVITE reached the proxy),
    C{notify} (a NOTIFY sipfrag, RFC 3515 section 2.4.5), C{ok} (2xx),
    C{fail} (>= 300; never spelled "failure").
    """

    START = "start"
    NOTIFY = "notify"
    OK = "ok"
    FAIL = "fail"


class HoldState(enum.Enum):
    """
    E_CALL_HOLD C{state}: C{start} (re-INVITE sent to the leg), C{ok},
    C{fail} (its answer).
    """

    START = "start"
    OK = "ok"
    FAIL = "fail"


@attrs.frozen
class DialogStateChanged:
    """
    One E_DLG_STATE_CHANGED.

    @ivar callid: the dialog's Call-ID.
    @ivar dialog_id: OpenSIPS' dialog ID C{"<hex>.<hex>"} (C{id}), or C{None}.
    @ivar old_state: the state left.
    @ivar new_state: the state entered.
    """

    callid: str
    dialog_id: str | None
    old_state: DialogState
    new_state: DialogState


@attrs.frozen
class TransferEvent:
    """
    One E_CALL_TRANSFER.

    @ivar callid: the transferred call's Call-ID.
    @ivar transfer_callid: the new call's Call-ID (the only reliable name
        of it: a blind C{start} carries junk in C{leg}).
    @ivar state: what happened.
    @ivar destination: the new R-URI without C{;osid=...}; C{None} when
        empty (C{notify}) or missing.
    @ivar status: the SIP status text (C{"486 Busy Here"}, C{""} for
        C{start}) or C{None} when missing.
    """

    callid: str
    transfer_callid: str
    state: TransferState
    destination: str | None
    status: str | None


@attrs.frozen
class HoldEvent:
    """
    One E_CALL_HOLD.

    @ivar callid: the dialog's Call-ID.
    @ivar leg: C{"caller"} or C{"callee"}.
    @ivar action: C{"hold"} or C{"unhold"}.
    @ivar state: what happened to that leg.
    """

    callid: str
    leg: str
    action: str
    state: HoldState


_DIALOG_STATES = {state.value: state for state in DialogState}
_TRANSFER_STATES = {state.value: state for state in TransferState}
_HOLD_STATES = {state.value: state for state in HoldState}
_LEGS = ("caller", "callee")
_ACTIONS = ("hold", "unhold")


def _dialog_state(value: Any) -> DialogState | None:
    if type(value) is not int:  # JSON numbers; not bool, not "4"
        return None
    return _DIALOG_STATES.get(value)


def strip_osid(destination: str) -> str:
    """
    Drop the C{;osid=<dialog id>} parameter callops adds to the new
    R-URI (kept in C{destination} when OpenSIPS itself answered the new
    INVITE, 3.4 README "E_CALL_TRANSFER" C{fail}).
    """
    if ";osid=" in destination:
        return destination.split(";osid=", 1)[0]
    return destination


def parse_dialog_state_changed(params: dict[str, Any]) -> DialogStateChanged | None:
    """
    @param params: the E_DLG_STATE_CHANGED params (C{id}, C{db_id},
        C{callid}, C{from_tag}, C{to_tag}, C{old_state}, C{new_state}).
    @return: the typed event, or C{None} (logged) when C{callid} is not a
        string or a state is not a dialog state number.
    """
    callid = params.get("callid")
    old_state = _dialog_state(params.get("old_state"))
    new_state = _dialog_state(params.get("new_state"))
    if not isinstance(callid, str) or old_state is None or new_state is None:
        _log.warn("dropped a malformed E_DLG_STATE_CHANGED {params!r}", params=params)
        return None
    dialog_id = params.get("id")
    return DialogStateChanged(callid, dialog_id if isinstance(dialog_id, str) else None, old_state, new_state)


def parse_transfer(params: dict[str, Any]) -> TransferEvent | None:
    """
    @param params: the E_CALL_TRANSFER params (C{callid}, C{leg},
        C{transfer_callid}, C{destination}, C{state}, C{status}).
    @return: the typed event, or C{None} (logged) when a Call-ID is not a
        string, C{state} is unknown, or C{destination} / C{status} is
        neither a string nor missing.
    """
    callid = params.get("callid")
    transfer_callid = params.get("transfer_callid")
    state = params.get("state")
    destination = params.get("destination")
    status = params.get("status")
    if (
        not isinstance(callid, str)
        or not isinstance(transfer_callid, str)
        or not isinstance(state, str)
        or state not in _TRANSFER_STATES
        or not (destination is None or isinstance(destination, str))
        or not (status is None or isinstance(status, str))
    ):
        _log.warn("dropped a malformed E_CALL_TRANSFER {params!r}", params=params)
        return None
    return TransferEvent(
        callid,
        transfer_callid,
        _TRANSFER_STATES[state],
        strip_osid(destination) if destination else None,
        status,
    )


def parse_hold(params: dict[str, Any]) -> HoldEvent | None:
    """
    @param params: the E_CALL_HOLD params (C{callid}, C{leg}, C{action},
        C{state}).
    @return: the typed event, or C{None} (logged) when C{leg} is not
        C{caller}/C{callee}, C{action} not C{hold}/C{unhold} or C{state}
        not C{start}/C{ok}/C{fail}.
    """
    callid = params.get("callid")
    leg = params.get("leg")
    action = params.get("action")
    state = params.get("state")
    if (
        not isinstance(callid, str)
        or leg not in _LEGS
        or action not in _ACTIONS
        or not isinstance(state, str)
        or state not in _HOLD_STATES
    ):
        _log.warn("dropped a malformed E_CALL_HOLD {params!r}", params=params)
        return None
    return HoldEvent(callid, leg, action, _HOLD_STATES[state])


@attrs.define
class DialogRecord:
    """
    One dialog of the proxy as the registry (L{callapi.interfaces.IDialogRegistry})
    holds it.  Times are the registry clock's seconds.

    @ivar callid: the dialog's Call-ID.
    @ivar dialog_id: OpenSIPS' internal ID C{"<hex>.<hex>"} (C{dlg_list}
        C{ID}, E_DLG_STATE_CHANGED C{id}), or C{None} while unknown.
    @ivar state: the last state seen.
    @ivar from_uri: C{dlg_list} C{from_uri}, or C{None} until looked up.
    @ivar to_uri: C{dlg_list} C{to_uri}, or C{None} until looked up.
    @ivar created_at: when the registry first heard of it.
    @ivar updated_at: when it last changed.
    @ivar ended_at: when it reached C{DELETED} (it lingers a bounded time),
        else C{None}.
    @ivar held: the legs on hold (C{"caller"}, C{"callee"}) from E_CALL_HOLD.
    @ivar owner_cmd_id: the cmd_id of the command that owns it, or C{None}.
    """

    callid: str
    dialog_id: str | None = None
    state: DialogState = DialogState.UNCONFIRMED
    from_uri: str | None = None
    to_uri: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None
    held: set[str] = attrs.Factory(set)
    owner_cmd_id: str | None = None
