"""
Builders of EVI event tuples for the Clock-driven scenario tests, with the
params in the member order of the wire (3.4 README "E_CALL_TRANSFER",
"E_DLG_STATE_CHANGED").
"""

from __future__ import annotations

from typing import Any

Event = tuple[str, dict[str, Any]]


def X(callid: str, leg: str, transfer_callid: str, destination: str, state: str,
      status: str) -> Event:
    """
    One E_CALL_TRANSFER, params in the wire's member order.
    """
    return ("E_CALL_TRANSFER", {"callid": callid, "leg": leg, "transfer_callid": transfer_callid,
                                "destination": destination, "state": state, "status": status})


def D(id_: str, db_id: str, callid: str, from_tag: str, to_tag: str | None, old_state: int,
      new_state: int) -> Event:
    """
    One E_DLG_STATE_CHANGED, params in the wire's member order.
    """
    return ("E_DLG_STATE_CHANGED", {"id": id_, "db_id": db_id, "callid": callid,
                                    "from_tag": from_tag, "to_tag": to_tag,
                                    "old_state": old_state, "new_state": new_state})
