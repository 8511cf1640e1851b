"""
Helpers of the Clock-driven scenario tests: builders of EVI event tuples
with the params in the member order of the wire (3.4 README
"E_CALL_TRANSFER", "E_DLG_STATE_CHANGED"), and the end-of-command check.
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


def assert_ended_clean(env: Any, cmd_id: str) -> None:
    """
    The command of C{env} (with C{command}, C{sink}, C{hub}, C{clock},
    C{mi} and C{events()}) ended exactly once and last, with at most one
    Error, and left nothing behind.
    """
    ended = ("Ended", None)
    events = env.events()
    assert events.count(ended) == 1 and events[-1] == ended, events
    assert [e for e, _ in events].count("Error") <= 1, events
    assert env.command.done
    assert env.command.outstanding == {"subscriptions": 0, "timers": 0, "requests": 0}
    assert env.hub.registrations == 0
    assert env.clock.getDelayedCalls() == []
    assert env.mi.pending == {}
    assert {(m, c) for m, c, _, _ in env.sink.notifications} == {(env.command.method, cmd_id)}
