"""
The emulator held to C{tests/traces/dlg_end_dlg_collision*.jsonl}: a
dialog whose Call-ID is another live dialog's internal ID, ended with
C{dlg_end_dlg dialog_id=<that ID>} (recorded with the real OpenSIPS 3.4 and
4.0.1 of the reference harness by C{tests/traces/record_collision.py}; see
C{tests/traces/README.md}).

Runs without OpenSIPS (a L{Clock}-driven emulator, no sockets).  The trace's
MI requests are sent at the trace's times; every MI reply and event of the
trace must have an emulator counterpart of the same kind that compares equal
under the bindings of C{tests/test_emulator_traces.py} (dialog IDs, tags and
db_ids are random: paired once, then held), and the emulator may send
nothing more.  Later requests are rewritten with the bindings, so dialog
B's Call-ID is the emulator's ID of dialog A, as in the recording.
Timing is not compared (the recording's phones are real ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from callapi.emulator import OpenSIPSEmulator
from tests.test_emulator_traces import Binder, Mismatch, compare

HERE = Path(__file__).resolve().parent.parent / "traces"
TRACES = {
    "3.4": HERE / "dlg_end_dlg_collision.jsonl",
    "4.0": HERE / "dlg_end_dlg_collision-4.0.jsonl",
}


def _kind(rec: dict[str, Any]) -> tuple[str, Any]:
    if rec["dir"] == "event":
        return ("event", rec["data"].get("method"))
    return ("reply", rec["data"].get("id"))


@pytest.mark.parametrize("version", sorted(TRACES))
def test_collision_trace_replays(version: str) -> None:
    path = TRACES[version]
    if not path.exists():
        pytest.skip(f"{path.name} not recorded")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    clock = Clock()
    clock.advance(100)
    out: list[dict[str, Any]] = []
    emu = OpenSIPSEmulator(
        clock,
        lambda socket, data: out.append({"dir": "event", "data": json.loads(data)}),
        version=version,
        seed=1,
    )
    emu.add_default_phones()
    binder = Binder()
    t0 = clock.seconds()
    expected: list[dict[str, Any]] = []

    def pump(until_ms: float) -> None:
        target = t0 + until_ms / 1000.0
        while (calls := [c.getTime() for c in clock.getDelayedCalls()]) and min(calls) <= target:
            clock.advance(max(0.0, min(calls) - clock.seconds()))
        clock.advance(max(0.0, target - clock.seconds()))

    def match_pending() -> None:
        """Pair every expected datagram seen so far with an emulator one."""
        nonlocal binder
        for rec in list(expected):
            for got in out:
                if _kind(got) != _kind(rec):
                    continue
                trial = binder.copy()
                where = rec["data"].get("method", "") if rec["dir"] == "event" else "reply"
                try:
                    compare(rec["data"], got["data"], trial, where)
                except Mismatch:
                    continue
                binder = trial
                out.remove(got)
                expected.remove(rec)
                break

    for rec in records:
        if rec["dir"] == "note":
            continue
        if rec["dir"] != "mi-request":
            expected.append(rec)
            continue
        pump(rec["t_ms"])
        match_pending()
        payload = json.dumps(_substitute(rec["data"], binder)).encode()
        emu.handle_datagram(payload, lambda data: out.append({"dir": "mi-reply", "data": json.loads(data)}))
    pump(records[-1]["t_ms"] + 2000)
    match_pending()
    assert expected == [], f"no emulator counterpart for {expected}; the emulator sent {out}"
    assert out == [], f"the emulator sent more than the trace: {out}"


def _substitute(value: Any, binder: Binder) -> Any:
    subs = binder.substitutions()
    if isinstance(value, str):
        for t, e in subs:
            value = value.replace(t, e)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, binder) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, binder) for v in value]
    return value
