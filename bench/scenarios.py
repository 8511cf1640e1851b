"""
What each load scenario sends and what a successful command looks like.

Pure data and one check, shared by the orchestrator (L{bench.cli},
L{bench.runner}) and the load processes (L{bench.load}).  The notification
sequences are those of docs/protocol.md.
"""

from __future__ import annotations

SCENARIOS = ("echo", "hold", "callstart", "blind", "idle")

#: CallStart of the callstart scenario, and the blind transfer's target
CALLSTART_CALLER = "sip:alice@127.0.0.1"
CALLSTART_CALLEE = "sip:bob@127.0.0.1"
BLIND_DESTINATION = "sip:cindy@127.0.0.1"

#: the first method of a slot, per scenario
FIRST_METHOD = {
    "echo": "Echo",
    "hold": "CallHold",
    "callstart": "CallStart",
    "blind": "CallBlindTransfer",
    "idle": "Echo",
}

#: the notification that counts a command as successful (its rate and the
#: "Success" latency); commands without one count when they end
SUCCESS_EVENT = {"CallStart": "CalleeAnswered", "CallBlindTransfer": "TransferSuccessful"}

#: scenarios that use emulator calls (one per slot, plus spares for blind)
CALL_SCENARIOS = ("hold", "blind")


def expected_ok(method: str, events: list[str]) -> bool:
    """
    Whether C{events} is the full, successful notification sequence of
    C{method} (docs/protocol.md, one section per command).

    @param method: the JSON-RPC method, e.g. C{"CallHold"}.
    @param events: the C{event} of every notification of the command, in
        order of arrival, C{Ended} included.
    """
    if method == "Echo":
        return events == ["Reply", "Ended"]
    if method in ("CallHold", "CallUnhold"):
        prefix = "CallHold" if method == "CallHold" else "CallUnhold"
        return (
            len(events) == 6
            and events[0] == prefix + "ing"
            and events[-1] == "Ended"
            and sorted(events[1:5]) == sorted([prefix + "Start"] * 2 + [prefix + "Successful"] * 2)
        )
    if method == "CallStart":
        return [e for e in events if e != "TransferPending"] == [
            "CallerAnswered",
            "Transferring",
            "TransferStart",
            "CalleeAnswered",
            "Ended",
        ]
    if method == "CallBlindTransfer":
        return [e for e in events if e != "TransferPending"] == [
            "Transferring",
            "TransferStart",
            "TransferSuccessful",
            "Ended",
        ]
    if method == "CallEnd":
        return events == ["Ended"]
    return events[-1:] == ["Ended"]
