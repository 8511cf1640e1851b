"""
Unit tests of the OpenSIPS emulator (L{callapi.emulator}).

Synchronous, on a L{Clock} with a list-collecting C{send_event}; a few tests
at the end use real loopback sockets (port 0) and always stop them.  The
trace file each behaviour follows is named in the emulator's docstrings; the
field-by-field comparison with the traces is C{tests/test_emulator_traces.py}.
"""

from __future__ import annotations

import json
import os
import socket as pysocket
import subprocess
import sys
import tempfile
from itertools import count
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from callapi.emulator import (
    EMULATOR_BANNER,
    OpenSIPSEmulator,
    Phone,
    add_default_phones,
    start_emulator,
)
from callapi.emulator.scheduler import Scheduler
from callapi.emulator.sip import core_hash, rev_hex

ALICE, BOB, CINDY = "sip:alice@127.0.0.1", "sip:bob@127.0.0.1", "sip:cindy@127.0.0.1"
DAVE, ERIN = "sip:dave@127.0.0.1", "sip:erin@127.0.0.1"
SOCK = "udp:127.0.0.1:9921"
REPO = Path(__file__).resolve().parent.parent
SDP = (
    "v=0\r\no=click-to-dial 0 0 IN IP4 0.0.0.0\r\ns=session\r\nc=IN IP4 0.0.0.0\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Harness:
    """An emulator on a Clock; every reply and event lands in one timeline."""

    def __init__(self, version: str = "3.4", subscribe: bool = True, **kw: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.timeline: list[tuple[str, Any]] = []
        self.sent: list[tuple[str, bytes]] = []
        self.emu = OpenSIPSEmulator(self.clock, self._send, version=version, seed=3, **kw)
        self.emu.add_default_phones()
        self._ids = count(1000)
        self.version = version
        if subscribe:
            for event in ("E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED"):
                assert (
                    self.result(self.n("event_subscribe"), {"event": event, "socket": SOCK, "expire": 120})
                    == "OK"
                )
        self.timeline.clear()

    def _send(self, socket: str, data: bytes) -> None:
        self.sent.append((socket, data))
        if socket == SOCK:
            self.timeline.append(("event", json.loads(data)))

    def raw(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []

        def reply(b: bytes) -> None:
            out.append(b)
            try:
                self.timeline.append(("reply", json.loads(b)))
            except ValueError:
                self.timeline.append(("reply", b))

        self.emu.handle_datagram(data, reply)
        return out

    def send(self, method: str, params: Any = None, rid: Any = None) -> list[bytes]:
        req: dict[str, Any] = {
            "jsonrpc": "2.0",
            "method": method,
            "id": next(self._ids) if rid is None else rid,
        }
        if params is not None:
            req["params"] = params
        return self.raw(json.dumps(req).encode())

    def call(self, method: str, params: Any = None, wait: float = 0.05) -> dict[str, Any]:
        """Send, run the clock for C{wait} seconds, return the (last) reply."""
        out = self.send(method, params)
        self.pump(wait)
        assert out, f"no reply to {method}"
        return json.loads(out[-1])

    def result(self, method: str, params: Any = None, wait: float = 0.05) -> Any:
        reply = self.call(method, params, wait)
        assert "result" in reply, reply
        return reply["result"]

    def error(self, method: str, params: Any = None, wait: float = 0.05) -> dict[str, Any]:
        reply = self.call(method, params, wait)
        assert "error" in reply, reply
        return reply["error"]

    def pump(self, seconds: float) -> None:
        """Run the clock call by call up to C{seconds} from now."""
        target = self.clock.seconds() + seconds
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            if not due or min(due) > target:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(max(0.0, target - self.clock.seconds()))

    def take(self) -> list[tuple[str, Any]]:
        out, self.timeline = self.timeline, []
        return out

    def events(self, method: str | None = None) -> list[dict[str, Any]]:
        return [
            d["params"]
            for kind, d in self.timeline
            if kind == "event" and (method is None or d["method"] == method)
        ]

    def add_call(self, a: str = ALICE, b: str = BOB) -> str:
        callid = self.emu.add_call(a, b)
        self.pump(0.2)
        return callid

    def click_to_dial(self, ruri: str = ALICE, callid: str = "c2d-1@x") -> dict[str, Any]:
        user = ruri.split(":")[1].split("@")[0]
        return self.result(
            "t_uac_dlg",
            {
                "method": "INVITE",
                "ruri": ruri,
                "headers": (
                    f"From: <sip:{user}@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\n"
                    f"Contact: <sip:{user}@127.0.0.1>\r\nContent-Type: application/sdp\r\n"
                    f"CSeq: 1 INVITE\r\nCall-Id: {callid}\r\n"
                ),
                "body": SDP,
            },
            wait=0.2,
        )

    def n(self, name: str) -> str:
        """The 3.x name, or the 4.0 canonical one."""
        if self.version != "4.0":
            return name
        return {
            "call_hold": "callops:hold",
            "call_unhold": "callops:unhold",
            "call_transfer": "callops:transfer",
            "dlg_end_dlg": "dialog:end_dlg",
            "dlg_list": "dialog:list",
            "t_uac_dlg": "tm:uac_dlg",
            "event_subscribe": "evi:subscribe",
        }.get(name, name)


def summary(timeline: list[tuple[str, Any]]) -> list[str]:
    out = []
    for kind, d in timeline:
        if kind == "reply":
            out.append("reply " + json.dumps(d.get("result", d.get("error")) if isinstance(d, dict) else d))
            continue
        p = d.get("params", {})
        if d["method"] == "E_CALL_HOLD":
            out.append(f"{p['leg']} {p['action']} {p['state']}")
        elif d["method"] == "E_DLG_STATE_CHANGED":
            out.append(f"dlg {p['callid']} {p['old_state']}->{p['new_state']}")
        elif d["method"] == "E_CALL_TRANSFER":
            out.append(f"xfer {p['callid']} {p['leg']} {p['state']} {p['status']}")
        else:
            out.append(d["method"])
    return out


@pytest.fixture
def h() -> Harness:
    return Harness("3.4")


@pytest.fixture
def h40() -> Harness:
    return Harness("4.0")


@pytest.fixture
def reactor() -> Any:
    """The reactor pytest-twisted runs (kept local: no shared conftest)."""
    from twisted.internet import reactor as global_reactor

    return global_reactor


# ---------------------------------------------------------------------------
# 1. transport (3.4/h_errors, 4.0/h_errors, 4.0/h_mi_crash)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.4", "4.0"])
@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc": "2.0", "method": "which", "id": 101',
        b"this is not json",
        b"\xff\xfe",
        b'{"jsonrpc": "2.0", "method": "version", "id": 1e400}',
        b'{"jsonrpc": "2.0", "method": "version", "id": NaN}',
    ],
)
def test_malformed_json_gets_plain_text_parse_error(version: str, data: bytes) -> None:
    assert Harness(version, subscribe=False).raw(data) == [b"400 Parse_error"]


def test_batch_is_invalid_request_with_null_id(h: Harness) -> None:
    assert h.raw(b'[{"jsonrpc": "2.0", "method": "version", "id": 105}]') == [
        b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}'
    ]


@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc": "2.0", "id": 102}',
        b'{"method": "version", "id": 102}',
        b'{"jsonrpc": "1.0", "method": "version", "id": 102}',
        b'{"jsonrpc": "2.0", "method": 5, "id": 102}',
    ],
)
def test_invalid_requests_34(h: Harness, data: bytes) -> None:
    assert h.raw(data) == [b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":102}']


@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc": "2.0", "id": 102}',
        b'[{"jsonrpc": "2.0", "method": "version", "id": 1}]',
        b'{"jsonrpc": "2.0", "method": 5, "id": 102}',
        b'"just a string"',
    ],
)
def test_40_request_without_method_gets_no_reply(h40: Harness, data: bytes) -> None:
    """4.0.1 crashes here (4.0/h_mi_crash): the emulator logs loudly, drops it
    and keeps serving."""
    from twisted.logger import ILogObserver, globalLogPublisher

    logged: list[dict[str, Any]] = []
    observer = cast(ILogObserver, logged.append)  # a callable is an ILogObserver; mypy cannot see it
    globalLogPublisher.addObserver(observer)
    try:
        assert h40.raw(data) == []
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any("CRASHES" in e.get("log_format", "") for e in logged)
    assert h40.result("version") == {"Server": "OpenSIPS (4.0.1 (x86_64/linux))"}


def test_40_jsonrpc_1_0_is_invalid_request(h40: Harness) -> None:
    assert json.loads(h40.raw(b'{"jsonrpc":"1.0","method":"version","id":104}')[0])["error"]["code"] == -32600


def test_unknown_method(h: Harness) -> None:
    assert h.send("no_such_command", rid=1) == [
        b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}'
    ]


def test_positional_params(h: Harness, h40: Harness) -> None:
    assert h.error("dlg_list", ["x"]) == {
        "code": -32602,
        "message": "Invalid params",
        "data": "Command only supports named parameters",
    }
    # 4.0/h_errors ids 19, 20: accepted where one recipe fits
    assert h40.error("callops:hold", ["x"]) == {"code": 404, "message": "Dialog not found"}
    assert h40.error("dialog:end_dlg", ["x"]) == {"code": 404, "message": "Requested Dialog not found"}


def test_notification_gets_no_reply_but_runs(h: Harness) -> None:
    assert (
        h.raw(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "event_subscribe",
                    "params": {"event": "E_CALL_HOLD", "socket": "udp:127.0.0.1:7777"},
                }
            ).encode()
        )
        == []
    )
    assert ("E_CALL_HOLD", "udp:127.0.0.1:7777") in h.emu.subscribers
    assert h.raw(b'{"jsonrpc":"2.0","method":"no_such"}') == []


@pytest.mark.parametrize(
    "rid, text",
    [
        ("str-id", b'"str-id"'),
        (None, b"null"),
        (12345678901234567890, b"12345678901234567890"),
        (1.5, b"1.5"),
        (0, b"0"),
    ],
)
def test_ids_are_echoed_with_their_type(h: Harness, rid: Any, text: bytes) -> None:
    req = b'{"jsonrpc":"2.0","method":"version","id":' + text + b"}"
    assert h.raw(req) == [
        b'{"jsonrpc":"2.0","result":{"Server":"OpenSIPS (3.4.18 (x86_64/linux))"},"id":' + text + b"}"
    ]


def test_reply_is_compact_in_member_order(h: Harness) -> None:
    out = h.send("call_hold", {"callid": "x"}, rid=7)
    assert out == [b'{"jsonrpc":"2.0","error":{"code":404,"message":"Dialog not found"},"id":7}']
    out = h.send("call_hold", {}, rid=8)
    assert out == [
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params",'
        b'"data":"Too few or too many parameters"},"id":8}'
    ]


def test_recipe_errors(h: Harness) -> None:
    assert h.error("dlg_end_dlg", {"callid": "x"})["data"] == "Named parameters do not match"
    assert h.error("call_transfer", {"callid": "x"})["data"] == "Too few or too many parameters"
    assert (
        h.error("t_uac_dlg", {"method": "INVITE", "ruri": ALICE})["data"] == "Too few or too many parameters"
    )


# ---------------------------------------------------------------------------
# 2. meta commands and the event interface
# ---------------------------------------------------------------------------


def test_which_34(h: Harness) -> None:
    names = h.result("which")
    assert len(names) == 65 and names[:3] == ["get_statistics", "list_statistics", "reset_statistics"]
    assert {"t_uac_dlg", "call_transfer", "call_hold", "dlg_end_dlg"} <= set(names)
    assert h.result("which", {"command": "call_hold"}) == [["callid"]]
    assert h.error("which", {"command": "callops:"}) == {"code": 404, "message": "unknown MI command"}


def test_which_40(h40: Harness) -> None:
    names = h40.result("which")
    assert len(names) == 69 and all(":" in n for n in names)
    assert h40.result("which", {"command": "callops:"}) == [
        "callops:transfer",
        "callops:hold",
        "callops:unhold",
    ]
    assert h40.result("which", {"command": "call_hold"}) == [
        ["callid"],
        ["callid", "leg"],
        ["callid", "leg", "headers"],
    ]
    for bad in ("list", "no_such_cmd", "nosuchmodule:"):
        assert h40.error("which", {"command": bad})["code"] == 404


def test_version_and_help(h: Harness, h40: Harness) -> None:
    assert h.result("version") == {"Server": "OpenSIPS (3.4.18 (x86_64/linux))"}
    assert h.result("help", {"mi_cmd": "call_transfer"}) == {
        "Help": "not available for this command",
        "Exported by": "callops",
    }
    assert h.result("help", {"mi_cmd": "event_subscribe"})["Exported by"] == "core"
    assert h40.result("help", {"mi_cmd": "evi:subscribe"}) == {
        "Help": "subscribes an event to the Event Interface",
        "Exported by": "evi",
    }
    assert h40.error("help", {"mi_cmd": "list"})["code"] == 404


def test_events_list_ids(h: Harness, h40: Harness) -> None:
    ids34 = {e["name"]: e["id"] for e in h.result("events_list")["Events"]}
    ids40 = {e["name"]: e["id"] for e in h40.result("evi:list")["Events"]}
    assert (ids34["E_DLG_STATE_CHANGED"], ids34["E_CALL_TRANSFER"], ids34["E_CALL_HOLD"]) == (6, 7, 8)
    assert (ids40["E_DLG_STATE_CHANGED"], ids40["E_CALL_TRANSFER"], ids40["E_CALL_HOLD"]) == (8, 9, 10)


@pytest.mark.parametrize("name", ["callops:transfer", "call_transfer", "transfer"])
def test_40_name_forms(h40: Harness, name: str) -> None:
    assert h40.error(name, {"callid": "x", "leg": "callee", "destination": CINDY}) == {
        "code": 404,
        "message": "Dialog not found",
    }


def test_40_ambiguous_and_mixed_names(h40: Harness) -> None:
    assert h40.send("list", rid="amb-1") == [
        b'{"jsonrpc":"2.0","error":{"code":-32001,"message":"Method ambiguous","data":'
        b'"supported names: statistics:list, tcp:list, evi:list, blacklists:list, '
        b'dialog:list"},"id":"amb-1"}'
    ]
    assert h40.error("get")["data"] == "supported names: statistics:get, status_report:get"
    assert h40.raw(b'{"jsonrpc":"2.0","method":"list"}') == []
    for bad in (
        "tm:t_uac_dlg",
        "callops:call_transfer",
        "Callops:Transfer",
        "CALL_TRANSFER",
        "callops:",
        ":transfer",
        "callops::transfer",
        "callops.transfer",
        "",
        ":",
    ):
        assert h40.error(bad)["code"] == -32601, bad
    # 3.4 knows no canonical names
    assert Harness("3.4", subscribe=False).error("callops:hold", {"callid": "x"})["code"] == -32601


def test_subscribe_validation(h: Harness) -> None:
    bad = {"code": 400, "message": "Bad parameter value"}
    assert h.error("event_subscribe", {"event": "E_NO_SUCH", "socket": SOCK}) == bad
    assert h.error("event_subscribe", {"event": "E_CALL_HOLD", "socket": "tcp:127.0.0.1:1"}) == bad
    assert (
        h.error("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK, "expire": -1})["data"]
        == "Negative expire value"
    )
    assert (
        h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": "unix:/tmp/x.sock", "expire": "30"})
        == "OK"
    )
    info = h.emu.subscribers[("E_CALL_HOLD", "unix:/tmp/x.sock")]
    assert info.expire == 30 and info.expires_at == info.subscribed_at + 30
    assert h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": "udp:1.2.3.4:5"}) == "OK"
    assert h.emu.subscribers[("E_CALL_HOLD", "udp:1.2.3.4:5")].expire == 3600


def probe(h: Harness, tag: str) -> Any:
    return h.call(
        "raise_event",
        {
            "event": "E_CALL_HOLD",
            "params": json.dumps({"callid": tag, "leg": "caller", "action": "hold", "state": "probe"}),
        },
    )


def delivered(h: Harness, tag: str) -> bool:
    return any(p.get("callid") == tag for p in h.events("E_CALL_HOLD"))


def test_expiry_in_whole_seconds(h: Harness) -> None:
    """3.4/h_subscription_expiry: expire 3 delivers at +3 s, not at +4 s; the
    first raise after expiry purges (OK), the next gets 480."""
    h = Harness(subscribe=False)
    h.clock.advance(0.5)
    h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK, "expire": 3})
    for second in range(4):
        assert probe(h, f"t{second}")["result"] == "OK"
        assert delivered(h, f"t{second}")
        h.pump(1.0)
    assert probe(h, "t4")["result"] == "OK" and not delivered(h, "t4")
    h.pump(1.0)
    assert probe(h, "t5")["error"] == {"code": 480, "message": "Temporarily Unavailable"}


def test_unsubscribe_is_lazy(h: Harness) -> None:
    h = Harness(subscribe=False)
    h.clock.advance(0.1)
    h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK, "expire": 120})
    h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK, "expire": 0})
    probe(h, "same-second")
    assert delivered(h, "same-second")
    h.pump(1.2)
    assert probe(h, "later")["result"] == "OK" and not delivered(h, "later")
    h.pump(1.0)
    assert probe(h, "gone")["error"]["code"] == 480


def test_resubscribe_refreshes(h: Harness) -> None:
    h = Harness(subscribe=False)
    h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK, "expire": 1})
    h.pump(1.0)
    h.result("event_subscribe", {"event": "E_CALL_HOLD", "socket": SOCK, "expire": 1})
    h.pump(1.0)
    probe(h, "refreshed")
    assert delivered(h, "refreshed")
    assert len([k for k in h.emu.subscribers if k[0] == "E_CALL_HOLD"]) == 1


def test_raise_event_forms(h: Harness) -> None:
    assert h.error("raise_event", {"event": "E_NO_SUCH"}) == {"code": 404, "message": "Event not registered"}
    assert h.error("raise_event", {"event": "E_CALL_HOLD", "params": {"callid": "x"}}) == {
        "code": 400,
        "message": "No Params",
    }
    h.sent.clear()
    assert h.result("raise_event", {"event": "E_CALL_HOLD", "params": ["a", 1]}) == "OK"
    assert h.sent == [(SOCK, b'{"jsonrpc":"2.0","method":"E_CALL_HOLD","params":{"":"a","":"1"}}')]
    h.sent.clear()
    h.result("raise_event", {"event": "E_CALL_HOLD"})
    assert h.sent == [(SOCK, b'{"jsonrpc":"2.0","method":"E_CALL_HOLD"}')]
    assert Harness(subscribe=False).error("raise_event", {"event": "E_CALL_HOLD"})["code"] == 480


def test_subscribers_list_bug_34_fixed_40() -> None:
    """3.4/h_subscribers_list_bug vs 4.0/h_subscribers_list_bug."""
    for version, expected in (("3.4", {"Event": {}}), ("4.0", None)):
        h = Harness(version, subscribe=False)
        h.result(
            h.n("event_subscribe"), {"event": "E_CALL_HOLD", "socket": "udp:127.0.0.1:9976", "expire": 1}
        )
        h.pump(2.5)
        h.result(h.n("event_subscribe"), {"event": "E_CALL_HOLD", "socket": SOCK, "expire": 120})
        listed = h.result("subscribers_list", {"event": "E_CALL_HOLD"})
        if expected is not None:
            assert listed == expected
            assert probe(h, "lost")["error"]["code"] == 480
        else:
            assert listed["Event"]["Subscribers"] == [{"socket": SOCK, "expire": 120, "ttl": 120}]
            assert probe(h, "kept")["result"] == "OK" and delivered(h, "kept")


def test_subscribers_list_all(h: Harness) -> None:
    listed = h.result("subscribers_list")
    assert [e["name"] for e in listed["Events"]] == ["E_DLG_STATE_CHANGED", "E_CALL_TRANSFER", "E_CALL_HOLD"]
    assert listed["Events"][0]["Subscribers"] == [{"socket": SOCK, "expire": 120, "ttl": 120}]


def test_event_datagram_format(h: Harness) -> None:
    callid = h.emu.add_call(ALICE, BOB, "fixed-callid")
    h.sent.clear()
    h.pump(0.1)
    data = h.sent[0][1]
    dlg = h.emu.dialogs[callid]
    assert dlg.caller.tag is not None and dlg.callee.tag is not None
    assert data == (
        b'{"jsonrpc":"2.0","method":"E_DLG_STATE_CHANGED","params":{"id":"'
        + dlg.dialog_id.encode()
        + b'","db_id":"'
        + dlg.db_id.encode()
        + b'","callid":"fixed-callid","from_tag":"'
        + dlg.caller.tag.encode()
        + b'","to_tag":"'
        + dlg.callee.tag.encode()
        + b'","old_state":1,"new_state":2}}'
    )


# ---------------------------------------------------------------------------
# calls and dialogs
# ---------------------------------------------------------------------------


def test_add_call_events_and_ids(h: Harness) -> None:
    callid = h.emu.add_call(ALICE, BOB, "6c93c431e29d3500")
    assert callid == "6c93c431e29d3500" and h.emu.dialogs[callid].state == 1
    h.pump(0.01)
    assert summary(h.take()) == [f"dlg {callid} 1->2", f"dlg {callid} 2->3", f"dlg {callid} 3->4"]
    dlg = h.emu.dialogs[callid]
    assert dlg.state == 4 and dlg.callid == callid
    # ID = reversed-hex hash entry . reversed-hex id; db_id = entry<<32|id
    # (3.4/f_hold_unhold.jsonl: this Call-ID has ID "cfc.*")
    assert dlg.dialog_id.startswith("cfc.")
    entry, hid = (int(x[::-1], 16) for x in dlg.dialog_id.split("."))
    assert dlg.db_id == str((entry << 32) | hid)
    assert dlg.caller.uri == ALICE and dlg.callee.uri == BOB and dlg.held == frozenset()


def test_core_hash_matches_traces() -> None:
    for callid, prefix in [
        ("6c93c431e29d3500", "cfc"),
        ("38bb11d20d700119", "a0d"),
        ("7b013b45-fcb0-4dd0-9f53-0552304c2ebb", "203"),
        ("d8c34540-217a-4f7d-906f-6f4b79f2c4d7", "0d"),
        ("9QUwW~qulz", "284"),
    ]:
        assert rev_hex(core_hash(callid)) == prefix


def test_add_call_generated_callid_and_unknown_caller(h: Harness) -> None:
    callid = h.emu.add_call(ALICE, BOB)
    assert len(callid) == 16 and callid in h.emu.dialogs
    assert len(h.emu.add_call(DAVE, BOB)) == 10
    with pytest.raises(KeyError):
        h.emu.add_call("sip:nobody@127.0.0.1", BOB)


def test_add_call_to_unknown_busy_noanswer(h: Harness) -> None:
    unknown = h.emu.add_call(ALICE, "sip:nobody@127.0.0.1")
    busy = h.emu.add_call(ALICE, "sip:busy@127.0.0.1")
    ringing = h.emu.add_call(ALICE, "sip:noanswer@127.0.0.1")
    h.pump(1.0)
    assert h.emu.dialogs[unknown].state == 5 and h.emu.dialogs[busy].state == 5
    assert h.emu.dialogs[ringing].state == 2
    assert h.emu.pending_calls == 1
    h.pump(120)
    assert h.emu.dialogs[ringing].state == 5 and h.emu.pending_calls == 0


def test_hangup(h: Harness) -> None:
    callid = h.add_call()
    h.take()
    h.emu.hangup(callid, "callee")
    h.pump(0.01)
    assert summary(h.take()) == [f"dlg {callid} 4->5"]
    early = h.emu.add_call(ALICE, "sip:noanswer@127.0.0.1")
    h.pump(0.01)
    h.emu.hangup(early, "caller")
    h.pump(0.01)
    assert summary(h.take())[-1] == f"dlg {early} 2->5"
    assert h.emu.pending_calls == 0
    with pytest.raises(KeyError):
        h.emu.hangup(early)


def test_dlg_end_dlg(h: Harness) -> None:
    """3.4/g_dlg_end_dlg."""
    callid = h.add_call()
    h.take()
    assert h.error("dlg_end_dlg", {"callid": callid})["data"] == "Named parameters do not match"
    h.take()
    assert h.result("dlg_end_dlg", {"dialog_id": callid}) == "OK"
    assert summary(h.take()) == ['reply "OK"', f"dlg {callid} 4->5"]
    assert h.error("dlg_end_dlg", {"dialog_id": callid}) == {
        "code": 404,
        "message": "Requested Dialog not found",
    }
    other = h.add_call()
    did = h.emu.dialogs[other].dialog_id
    assert h.result("dlg_end_dlg", {"dialog_id": did, "extra_hdrs": "Reason: x\r\n"}) == "OK"
    assert h.emu.dialogs[other].state == 5
    early = h.emu.add_call(ALICE, "sip:noanswer@127.0.0.1")
    h.pump(0.01)
    h.take()
    assert h.result("dlg_end_dlg", {"dialog_id": early}) == "OK"
    assert summary(h.take()) == ['reply "OK"', f"dlg {early} 2->5"]
    assert h.emu.pending_calls == 0


def test_dlg_list(h: Harness) -> None:
    """3.4/i_dlg_list: shapes and keys."""
    confirmed = h.add_call()
    h.click_to_dial(CINDY, "7b013b45-fcb0-4dd0-9f53-0552304c2ebb")
    early = h.emu.add_call(ALICE, "sip:noanswer@127.0.0.1")
    h.pump(0.01)
    listed = h.result("dlg_list")["Dialogs"]
    assert len(listed) == 3
    entries = [int(d["ID"].split(".")[0][::-1], 16) for d in listed]
    assert entries == sorted(entries)
    one = h.result("dlg_list", {"callid": confirmed})["Dialog"]
    assert list(one) == [
        "ID",
        "db_id",
        "state",
        "user_flags",
        "timestart",
        "datestart",
        "timeout",
        "dateout",
        "callid",
        "from_uri",
        "to_uri",
        "caller_tag",
        "caller_contact",
        "callee_cseq",
        "caller_route_set",
        "caller_bind_addr",
        "caller_sdp",
        "CALLEES",
    ]
    assert one["state"] == 4 and one["timeout"] == one["timestart"] + 43200
    assert one["caller_contact"] == "sip:alice-0x564a33827400@127.0.0.1:5071"
    assert list(one["CALLEES"][0]) == [
        "callee_tag",
        "callee_contact",
        "caller_cseq",
        "callee_route_set",
        "callee_bind_addr",
        "callee_sdp",
    ]
    ring = h.result("dlg_list", {"callid": early})["Dialog"]
    assert ring["state"] == 2 and ring["timestart"] == 0 and "datestart" not in ring
    assert ring["CALLEES"][0]["callee_contact"] == "" and "callee_sdp" not in ring["CALLEES"][0]
    c2d = h.result("dlg_list_ctx", {"callid": "7b013b45-fcb0-4dd0-9f53-0552304c2ebb"})["Dialog"]
    assert c2d["caller_contact"] == CINDY and c2d["caller_sdp"] == SDP
    assert c2d["CALLEES"][0]["caller_cseq"] == "1" and c2d["context"] == {}
    assert h.error("dlg_list", {"callid": "no-such-call@x"}) == {"code": 404, "message": "No such dialog"}
    assert h.error("dlg_list", {"callid": 12345})["code"] == 404
    page = h.result("dlg_list", {"index": 0, "counter": 1})
    assert page["count"] == 3 and page["Dialogs"] == listed[:1]
    # ended dialogs stay listed for a while (3.4/e_attended_transfer)
    h.result("dlg_end_dlg", {"dialog_id": confirmed})
    gone = h.result("dlg_list", {"callid": confirmed})["Dialog"]
    assert gone["state"] == 5 and gone["timeout"] == 0 and "dateout" not in gone
    h.pump(11)
    assert h.error("dlg_list", {"callid": confirmed})["code"] == 404


# ---------------------------------------------------------------------------
# 3. call_hold / call_unhold
# ---------------------------------------------------------------------------


def test_hold_unhold_sequence_34(h: Harness) -> None:
    """3.4/f_hold_unhold: exact order of events and reply."""
    callid = h.add_call()
    h.take()
    assert h.result("call_hold", {"callid": callid}) == "OK"
    assert summary(h.take()) == [
        "caller hold start",
        "callee hold start",
        "caller hold ok",
        'reply "OK"',
        "callee hold ok",
    ]
    assert h.emu.dialogs[callid].held == {"caller", "callee"}
    assert h.error("call_hold", {"callid": callid}) == {
        "code": 480,
        "message": "Both dialog legs are on hold",
    }
    assert h.result("call_unhold", {"callid": callid}) == "OK"
    assert summary(h.take())[1:] == [
        "callee unhold start",
        "caller unhold start",
        'reply "OK"',
        "callee unhold ok",
        "caller unhold ok",
    ]
    assert h.error("call_unhold", {"callid": callid}) == {"code": 480, "message": "No dialog legs on hold"}
    assert h.error("call_hold", {"callid": "no-such-call@x"}) == {"code": 404, "message": "Dialog not found"}
    assert h.error("call_unhold", {"callid": "no-such-call@x"})["code"] == 404
    assert h.error("call_hold", {})["data"] == "Too few or too many parameters"
    # 3.4 has no per-leg hold
    assert (
        h.error("call_hold", {"callid": callid, "leg": "caller"})["data"] == "Too few or too many parameters"
    )


def test_hold_early_dialog_not_ready(h: Harness) -> None:
    callid = h.emu.add_call(ALICE, "sip:slow@127.0.0.1")
    h.pump(0.01)
    assert h.error("call_hold", {"callid": callid}) == {"code": 410, "message": "Dialog not ready"}
    h.pump(3.1)
    assert h.result("call_hold", {"callid": callid}) == "OK"


def test_hold_leg_that_refuses(h: Harness) -> None:
    h.emu.add_phone("sip:stubborn@127.0.0.1", Phone.baresip(hold_ok=False))
    callid = h.add_call(ALICE, "sip:stubborn@127.0.0.1")
    h.take()
    assert h.result("call_hold", {"callid": callid}) == "OK"
    assert "callee hold fail" in summary(h.take())


def test_hold_click_to_dial_34(h: Harness) -> None:
    """3.4/f_hold_early_and_click_to_dial: the caller leg is OpenSIPS (488)."""
    h.click_to_dial()
    h.take()
    assert h.result("call_hold", {"callid": "c2d-1@x"}) == "OK"
    assert summary(h.take()) == [
        "caller hold start",
        "callee hold start",
        "caller hold fail",
        'reply "OK"',
        "callee hold ok",
    ]
    assert h.result("call_unhold", {"callid": "c2d-1@x"}) == "OK"
    assert sorted(summary(h.take())) == sorted(
        ["callee unhold start", "caller unhold start", 'reply "OK"', "caller unhold fail", "callee unhold ok"]
    )


def test_hold_click_to_dial_40(h40: Harness) -> None:
    """4.0: a failed leg is not held: hold again retries only it; unhold
    touches only the callee (4.0/f_hold_per_leg_click_to_dial)."""
    h40.click_to_dial()
    h40.result("callops:hold", {"callid": "c2d-1@x"})
    h40.take()
    assert h40.result("callops:hold", {"callid": "c2d-1@x"}) == "OK"
    assert summary(h40.take()) == ["caller hold start", "caller hold fail", 'reply "OK"']
    assert h40.result("callops:unhold", {"callid": "c2d-1@x"}) == "OK"
    assert summary(h40.take()) == ["callee unhold start", 'reply "OK"', "callee unhold ok"]
    assert h40.error("callops:unhold", {"callid": "c2d-1@x"})["code"] == 480


def test_per_leg_hold_40(h40: Harness) -> None:
    """4.0/f_hold_per_leg."""
    callid = h40.add_call()
    h40.take()
    assert h40.result("callops:hold", {"callid": callid, "leg": "caller"}) == "OK"
    assert sorted(summary(h40.take())) == sorted(
        ["caller hold start", "callee hold start", "caller hold ok", 'reply "OK"', "callee hold ok"]
    )
    assert h40.error("callops:hold", {"callid": callid, "leg": "caller"}) == {
        "code": 480,
        "message": "Both dialog legs are on hold",
    }
    # unhold of the other leg: OK and events, but nothing resumed
    assert h40.result("callops:unhold", {"callid": callid, "leg": "callee"}) == "OK"
    assert len(h40.events("E_CALL_HOLD")) == 4
    assert h40.emu.dialogs[callid].held == {"caller", "callee"}
    h40.take()
    assert h40.result("callops:unhold", {"callid": callid, "leg": "caller"}) == "OK"
    assert h40.emu.dialogs[callid].held == frozenset()
    assert h40.error("callops:unhold", {"callid": callid, "leg": "caller"})["code"] == 480
    # callee then caller on top: both OK; then a plain hold is 480
    assert h40.result("callops:hold", {"callid": callid, "leg": "callee"}) == "OK"
    assert h40.result("call_hold", {"callid": callid, "leg": "caller"}) == "OK"
    assert h40.error("callops:hold", {"callid": callid})["code"] == 480
    assert h40.result("callops:unhold", {"callid": callid, "leg": "both"}) == "OK"
    assert h40.emu.dialogs[callid].held == frozenset()


def test_per_leg_hold_errors_40(h40: Harness) -> None:
    callid = h40.add_call()
    for leg in ("sideways", 1):
        assert h40.error("callops:hold", {"callid": callid, "leg": leg}) == {
            "code": 420,
            "message": "Bad leg",
        }
    assert h40.error("callops:unhold", {"callid": callid, "leg": "x"})["code"] == 420
    assert (
        h40.error("callops:hold", {"callid": callid, "headers": "X: 1\r\n"})["data"]
        == "Named parameters do not match"
    )
    assert (
        h40.error("callops:hold", {"callid": callid, "leg": "both", "headers": {"caller": "X: 1\r\n"}})[
            "data"
        ]
        == "Bad type for parameter 'headers'"
    )
    assert (
        h40.error("callops:hold", {"callid": callid, "leg": "callee", "headers": "X\r\n", "extra": 1})["data"]
        == "Too few or too many parameters"
    )


def test_headers_forms_40(h40: Harness) -> None:
    callid = h40.add_call()
    for headers in (
        "X-A: 1\r\n",
        ["X-To-Caller: a\r\n", "X-To-Callee: b\r\n"],
        ["", "X-Only: 1\r\n"],
        "X-Escaped: 1\\r\\n",
    ):
        assert h40.result("callops:hold", {"callid": callid, "leg": "both", "headers": headers}) == "OK"
        assert h40.result("callops:unhold", {"callid": callid, "leg": "both", "headers": headers}) == "OK"
    h40.take()
    # not CRLF-terminated -> malformed re-INVITEs, no answer, fail ~4.5 s later
    assert h40.result("callops:hold", {"callid": callid, "leg": "both", "headers": [1, 2]}) == "OK"
    assert summary(h40.take()) == ["caller hold start", "callee hold start", 'reply "OK"']
    h40.pump(4.5)
    assert summary(h40.take()) == ["caller hold fail", "callee hold fail"]
    assert h40.error("callops:unhold", {"callid": callid})["code"] == 480


def test_overlapping_holds_40(h40: Harness) -> None:
    """4.0/f_hold_per_leg ids 28/29: both OK, retransmitted 200s -> extra oks."""
    callid = h40.add_call()
    h40.take()
    first = h40.send("callops:hold", {"callid": callid})
    second = h40.send("callops:hold", {"callid": callid})
    h40.pump(5)
    assert json.loads(first[0])["result"] == "OK" and json.loads(second[0])["result"] == "OK"
    states = summary(h40.take())
    assert states.count("caller hold start") == 2 and states.count("callee hold start") == 2
    assert states.count("caller hold ok") == 5 and states.count("callee hold ok") == 5
    # 3.4 marks on send: the second hold is 480
    h = Harness("3.4")
    callid = h.add_call()
    h.send("call_hold", {"callid": callid})
    assert json.loads(h.send("call_hold", {"callid": callid})[0])["error"]["code"] == 480


# ---------------------------------------------------------------------------
# t_uac_dlg / t_uac_cancel
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({"method": "INVITE", "ruri": ALICE, "headers": "To: <sip:bob@127.0.0.1>\r\n"}, "From missing"),
        (
            {
                "method": "INVITE",
                "ruri": "not a uri",
                "headers": "From: <sip:a@127.0.0.1>\r\nTo: <sip:b@127.0.0.1>\r\n",
            },
            "Invalid ruri",
        ),
        (
            {
                "method": "INVITE",
                "ruri": ALICE,
                "body": SDP,
                "headers": "From: <sip:a@127.0.0.1>\r\nTo: <sip:b@127.0.0.1>\r\n",
            },
            "Content-Type missing",
        ),
        (
            {
                "method": "INVITE",
                "ruri": ALICE,
                "headers": "From: <sip:a@127.0.0.1>\r\nTo: <sip:b@127.0.0.1>\r\nCSeq: 1 BYE\r\n",
            },
            "CSeq method mismatch",
        ),
    ],
)
def test_uac_dlg_validation(h: Harness, params: dict[str, Any], message: str) -> None:
    assert h.error("t_uac_dlg", params) == {"code": 400, "message": message}


def test_click_to_dial_success(h: Harness) -> None:
    """3.4/a_click_to_dial_success: result shape and E_DLG events."""
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": ALICE,
            "headers": (
                "From: <sip:alice@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\n"
                "Contact: <sip:alice@127.0.0.1>\r\nContent-Type: application/sdp\r\n"
                "CSeq: 1 INVITE\r\nCall-Id: d5b79d51@x\r\n"
            ),
            "body": SDP,
        },
    )
    assert out == []
    h.pump(0.1)
    assert summary(h.take())[:2] == ["dlg d5b79d51@x 1->2", "dlg d5b79d51@x 2->3"]
    result = json.loads(out[0])["result"]
    dlg = h.emu.dialogs["d5b79d51@x"]
    assert list(result) == ["Status", "RURI", "Next-hop", "Routes", "Message"]
    assert result["Status"] == "200 Answering"
    assert result["RURI"] == "sip:alice-0x564a33827400@127.0.0.1:5071"
    assert result["Next-hop"] == f"sip:127.0.0.1;lr;did={dlg.dialog_id}"
    assert result["Routes"] == [f"<sip:127.0.0.1;lr;did={dlg.dialog_id}>"]
    assert "Call-ID: d5b79d51@x\r\n" in result["Message"]
    assert dlg.state == 4 and dlg.caller.is_local and dlg.callee.phone_uri == ALICE
    assert h.emu.pending_calls == 0


def test_click_to_dial_linphone(h: Harness) -> None:
    result = h.click_to_dial(DAVE)
    assert result["Status"] == "200 Ok" and result["RURI"] == "sip:127.0.0.1:5077;transport=udp"


@pytest.mark.parametrize(
    "user, not_before, by, status, events",
    [
        ("busy", 0.4, 0.6, "486 Busy Here", ["1->2", "2->5"]),
        ("noanswer", 119.0, 121.0, "408 Request Timeout", ["1->2", "2->5"]),
        ("offline", 4.9, 5.6, "408 Request Timeout", ["1->5"]),
        ("nobody", 0.0, 0.01, "404 User Not Found", ["1->5"]),
    ],
)
def test_click_to_dial_failures(
    h: Harness, user: str, not_before: float, by: float, status: str, events: list[str]
) -> None:
    """3.4/b_click_to_dial_{busy,noanswer,offline,unknown_user}."""
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": f"sip:{user}@127.0.0.1",
            "headers": (
                f"From: <sip:{user}@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\n"
                "CSeq: 1 INVITE\r\nCall-Id: fail-1@x\r\n"
            ),
        },
    )
    h.pump(not_before)
    assert out == []
    h.pump(by - not_before)
    assert len(out) == 1
    result = json.loads(out[0])["result"]
    assert result["Status"] == status
    if user == "noanswer":
        assert list(result) == ["Status"]
    else:
        assert list(result) == ["Status", "Message"]
        assert "Call-ID: fail-1@x" in result["Message"]
    assert [s.split()[-1] for s in summary(h.take()) if s.startswith("dlg")] == events
    assert h.emu.pending_calls == 0


def test_pass_provisional_replies() -> None:
    h = Harness(pass_provisional_replies=True)
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": "sip:slow@127.0.0.1",
            "headers": "From: <sip:slow@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\nCall-Id: p@x\r\n",
        },
    )
    h.pump(0.01)
    assert [json.loads(o)["result"]["Status"] for o in out] == ["180 Ringing"]
    assert list(json.loads(out[0])["result"]) == ["Status", "Message"]
    h.pump(3.1)
    assert [json.loads(o)["result"]["Status"] for o in out] == ["180 Ringing", "200 OK"]
    # default: no provisional datagram
    h = Harness()
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": "sip:slow@127.0.0.1",
            "headers": "From: <sip:slow@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\nCall-Id: p@x\r\n",
        },
    )
    h.pump(3.1)
    assert [json.loads(o)["result"]["Status"] for o in out] == ["200 OK"]


def bye(h: Harness, ruri: str, callid: str, via_proxy: bool = False) -> dict[str, Any]:
    params = {
        "method": "BYE",
        "ruri": ruri,
        "headers": f"From: <{ALICE}>;tag=x\r\nTo: <{BOB}>;tag=y\r\nCall-ID: {callid}\r\nCSeq: 3 BYE\r\n",
    }
    if via_proxy:
        params["next_hop"] = "sip:127.0.0.1:5060"
    return h.result("t_uac_dlg", params)


def test_go_style_bye_leaves_stale_dialog(h: Harness) -> None:
    """3.4/a_click_to_dial_bye_variants BYE 1 and 2."""
    contact = h.click_to_dial()["RURI"]
    result = bye(h, contact, "c2d-1@x")
    assert result["Status"] == "200 OK" and "Call-ID: c2d-1@x" in result["Message"]
    assert h.emu.dialogs["c2d-1@x"].state == 4
    assert bye(h, contact, "c2d-1@x")["Status"] == "481 Call Does Not Exist"
    assert h.result("dlg_end_dlg", {"dialog_id": "c2d-1@x"}) == "OK"
    h.click_to_dial(callid="c2d-2@x")
    h.take()
    assert bye(h, contact, "c2d-2@x", via_proxy=True)["Status"] == "200 OK"
    assert summary(h.take())[0] == "dlg c2d-2@x 4->5"
    assert h.emu.dialogs["c2d-2@x"].state == 5


def test_uac_cancel(h: Harness) -> None:
    """3.4/b_click_to_dial_cancel."""
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": "sip:noanswer@127.0.0.1",
            "headers": "From: <sip:n@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\nCSeq: 1 INVITE\r\n"
            "Call-Id: cancel-me@x\r\n",
        },
    )
    h.pump(1.5)
    assert h.result("t_uac_cancel", {"callid": "cancel-me@x", "cseq": "1"}) == "OK"
    assert h.emu.dialogs["cancel-me@x"].state == 5 and out == []
    h.pump(119)
    assert [json.loads(o)["result"] for o in out] == [{"Status": "408 Request Timeout"}]
    assert h.error("t_uac_cancel", {"callid": "cancel-me@x", "cseq": "1"}) == {
        "code": 481,
        "message": "No such transaction",
    }


# ---------------------------------------------------------------------------
# call_transfer
# ---------------------------------------------------------------------------


def xfers(h: Harness) -> list[tuple[str, str, str, str, str]]:
    return [
        (p["callid"], p["leg"], p["destination"], p["state"], p["status"])
        for p in h.events("E_CALL_TRANSFER")
    ]


def test_blind_transfer_baresip(h: Harness) -> None:
    """3.4/d_blind_transfer_callee_success: start (leg = new Call-ID), ok; bob
    hangs up the old call himself."""
    callid = h.add_call()
    h.take()
    assert (
        h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}, wait=0.1)
        == "Accepted"
    )
    events = h.events("E_CALL_TRANSFER")
    new = events[0]["transfer_callid"]
    assert new != callid and new in h.emu.dialogs and len(new) == 16
    assert xfers(h) == [(callid, new, CINDY, "start", ""), (callid, "callee", CINDY, "ok", "200 Answering")]
    assert list(events[0]) == ["callid", "leg", "transfer_callid", "destination", "state", "status"]
    assert h.emu.dialogs[callid].state == 5
    new_dlg = h.emu.dialogs[new]
    assert new_dlg.state == 4 and new_dlg.from_uri == BOB
    assert new_dlg.to_uri == f"{CINDY};osid={h.emu.dialogs[callid].dialog_id}"
    assert h.error("dlg_end_dlg", {"dialog_id": callid})["code"] == 404
    assert summary(h.timeline)[0] == 'reply "Accepted"'


def test_blind_transfer_linphone(h: Harness) -> None:
    """3.4/d_blind_transfer_callee_success_linphone: start, ok, notify 100/200,
    dave keeps the old call."""
    callid = h.add_call(ALICE, DAVE)
    h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}, wait=0.5)
    new = h.events("E_CALL_TRANSFER")[0]["transfer_callid"]
    assert xfers(h) == [
        (callid, new, CINDY, "start", ""),
        (callid, "callee", CINDY, "ok", "200 Answering"),
        (callid, "", "", "notify", "100 Trying"),
        (callid, "", "", "notify", "200 Ok"),
    ]
    assert h.emu.dialogs[callid].state == 4
    assert h.result("dlg_end_dlg", {"dialog_id": callid}) == "OK"


def test_transfer_refer_rejected_and_lost_race(h: Harness) -> None:
    """3.4/d_blind_transfer_refer_rejected and _caller_success: no event at all."""
    h.emu.add_phone(BOB, Phone.baresip(refer="reject"))
    callid = h.add_call()
    assert (
        h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}, wait=1)
        == "Accepted"
    )
    assert xfers(h) == [] and h.emu.dialogs[callid].state == 4
    h.emu.add_phone(ALICE, Phone.baresip(refer="lost_race"))
    other = h.add_call()
    h.take()
    assert (
        h.result("call_transfer", {"callid": other, "leg": "caller", "destination": CINDY}, wait=1)
        == "Accepted"
    )
    assert xfers(h) == []
    dlgs = [s for s in summary(h.take()) if s.startswith("dlg")]
    assert dlgs[0] == f"dlg {other} 4->5" and len(dlgs) == 4


def test_transfer_to_unknown_user(h: Harness) -> None:
    """3.4/c_click_to_dial_transfer_unknown_user: start and fail (408, osid)
    before "Accepted"."""
    h.click_to_dial()
    h.take()
    h.result("call_transfer", {"callid": "c2d-1@x", "leg": "callee", "destination": "sip:nobody@127.0.0.1"})
    did = h.emu.dialogs["c2d-1@x"].dialog_id
    start, fail = h.events("E_CALL_TRANSFER")
    new = start["transfer_callid"]
    assert start["destination"] == "sip:nobody@127.0.0.1"
    assert fail["destination"] == f"sip:nobody@127.0.0.1;osid={did}"
    assert summary(h.take()) == [
        f"xfer c2d-1@x {new} start ",
        f"dlg {new} 1->5",
        "xfer c2d-1@x callee fail 408 Request Timeout",
        'reply "Accepted"',
        "dlg c2d-1@x 4->5",
    ]
    h.pump(1)
    assert (
        h.error("call_transfer", {"callid": "c2d-1@x", "leg": "callee", "destination": CINDY})["code"] == 404
    )
    assert h.emu.dialogs[new].to_uri == f"sip:nobody@127.0.0.1;osid={did}"


def test_transfer_failure_and_491(h: Harness) -> None:
    """3.4/d_blind_transfer_failure; 491 while running and after it ended
    (4.0/d_blind_transfer_retry_after_fail)."""
    callid = h.add_call(ALICE, DAVE)
    h.send("call_transfer", {"callid": callid, "leg": "callee", "destination": "sip:busy@127.0.0.1"})
    assert h.error("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}) == {
        "code": 491,
        "message": "Request Pending",
    }
    h.pump(1)
    states = [(x[3], x[4]) for x in xfers(h)]
    assert ("fail", "486 Busy Here") in states
    for leg in ("callee", "caller"):
        assert h.error("call_transfer", {"callid": callid, "leg": leg, "destination": CINDY})["code"] == 491


def test_transfer_errors(h: Harness, h40: Harness) -> None:
    """3.4/d_blind_transfer_errors, 3.4/e_attended_transfer_errors, 4.0 variants."""
    for hh, both in (
        (h, {"code": -32602, "message": "Invalid params", "data": "Bad type for parameter 'leg'"}),
        (h40, {"code": -32000, "message": "Server error", "data": "Failed to handle parameter"}),
    ):
        callid = hh.add_call()
        name = hh.n("call_transfer")
        assert hh.error(name, {"callid": "no-such-call@x", "leg": "callee", "destination": CINDY}) == {
            "code": 404,
            "message": "Dialog not found",
        }
        assert hh.error(name, {"callid": callid, "leg": "both", "destination": CINDY}) == both
        assert hh.error(name, {"callid": callid, "leg": "callee"})["data"] == "Too few or too many parameters"
        assert hh.error(
            name,
            {
                "callid": callid,
                "leg": "callee",
                "transfer_callid": "no-such-call@x",
                "transfer_leg": "callee",
            },
        ) == {"code": 404, "message": "Transfer dialog not found"}
        assert hh.error(
            name,
            {
                "callid": "no-such-call@x",
                "leg": "callee",
                "transfer_callid": callid,
                "transfer_leg": "caller",
            },
        ) == {"code": 404, "message": "Dialog not found"}
        assert (
            hh.error(
                name,
                {"callid": callid, "leg": "callee", "transfer_callid": callid, "transfer_leg": "sideways"},
            )["code"]
            == -32000
        )
        assert (
            hh.error(
                name,
                {
                    "callid": callid,
                    "leg": "callee",
                    "transfer_callid": "u@x",
                    "transfer_fromtag": "f",
                    "transfer_totag": "t",
                    "transfer_destination": CINDY,
                },
            )["code"]
            == -32000
        )


def test_attended_transfer_linphone(h: Harness) -> None:
    """3.4/e_attended_transfer: doubled events, notify for call1 only, erin
    BYEs call2."""
    call1 = h.add_call(ALICE, DAVE)
    call2 = h.add_call(ALICE, ERIN)
    h.take()
    assert (
        h.result(
            "call_transfer",
            {"callid": call1, "leg": "callee", "transfer_callid": call2, "transfer_leg": "callee"},
            wait=0.5,
        )
        == "Accepted"
    )
    new = h.events("E_CALL_TRANSFER")[0]["transfer_callid"]
    got = xfers(h)
    assert got[:2] == [(call1, "callee", ERIN, "start", ""), (call2, "callee", ERIN, "start", "")]
    assert sorted(got[2:]) == sorted(
        [
            (call1, "callee", "", "notify", "100 Trying"),
            (call2, "callee", ERIN, "ok", "200 Ok"),
            (call1, "callee", ERIN, "ok", "200 Ok"),
            (call1, "", "", "notify", "200 Ok"),
        ]
    )
    assert h.emu.dialogs[call2].state == 5 and h.emu.dialogs[call1].state == 4
    assert h.emu.dialogs[new].to_uri == ERIN


def test_attended_transfer_baresip_raises_nothing(h: Harness) -> None:
    """3.4/e_attended_transfer_baresip."""
    call1 = h.add_call(ALICE, BOB)
    call2 = h.add_call(ALICE, CINDY)
    h.result(
        "call_transfer",
        {"callid": call1, "leg": "callee", "transfer_callid": call2, "transfer_leg": "callee"},
        wait=0.5,
    )
    assert xfers(h) == []
    assert h.emu.dialogs[call1].state == 5 and h.emu.dialogs[call2].state == 4
    assert len(h.emu.dialogs) == 3


def test_notify_delay_knob(h: Harness) -> None:
    """3.4/d_blind_transfer_callee_success_notify_delay: with the harness knob
    baresip's NOTIFYs are matched and bob keeps the call."""
    assert h.result("shv_set", {"name": "notify_delay_ms", "type": "int", "value": 300}) == "OK"
    assert h.result("shv_get", {"name": "notify_delay_ms"}) == {"VAR": {"type": "integer", "value": 300}}
    callid = h.add_call()
    h.result("call_transfer", {"callid": callid, "leg": "callee", "destination": CINDY}, wait=1)
    assert [(x[1] if x[3] != "start" else "new", x[3], x[4]) for x in xfers(h)] == [
        ("new", "start", ""),
        ("callee", "ok", "200 Answering"),
        ("", "notify", "100 Trying"),
        ("", "notify", "200 OK"),
    ]
    assert h.emu.dialogs[callid].state == 4


# ---------------------------------------------------------------------------
# scheduling
# ---------------------------------------------------------------------------


def test_delay_scale_zero_keeps_order() -> None:
    h = Harness(delay_scale=0)
    callid = h.emu.add_call(ALICE, BOB)
    h.clock.advance(0)
    h.result("call_hold", {"callid": callid}, wait=0)
    assert summary(h.take())[-5:] == [
        "caller hold start",
        "callee hold start",
        "caller hold ok",
        'reply "OK"',
        "callee hold ok",
    ]
    assert h.emu.pending_calls == 0


def test_delay_scale_multiplies() -> None:
    h = Harness(delay_scale=10)
    out = h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": "sip:busy@127.0.0.1",
            "headers": "From: <sip:b@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\nCall-Id: s@x\r\n",
        },
    )
    h.pump(5.0)
    assert out == []
    h.pump(0.1)
    assert json.loads(out[0])["result"]["Status"] == "486 Busy Here"


def test_one_big_advance_runs_whole_chains(h: Harness) -> None:
    callid = h.emu.add_call(ALICE, BOB)
    h.clock.advance(1)
    assert h.emu.dialogs[callid].state == 4


def test_stop_cancels_everything(h: Harness) -> None:
    h.emu.add_call(ALICE, "sip:noanswer@127.0.0.1")
    callid = h.add_call()
    h.send("call_hold", {"callid": callid})
    h.send(
        "t_uac_dlg",
        {
            "method": "INVITE",
            "ruri": "sip:offline@127.0.0.1",
            "headers": "From: <sip:o@127.0.0.1>\r\nTo: <sip:b@127.0.0.1>\r\n",
        },
    )
    assert h.emu.pending_calls >= 3
    h.emu.stop()
    assert h.emu.pending_calls == 0 and h.clock.getDelayedCalls() == []


def test_scheduler_chain_order_with_equal_offsets() -> None:
    clock = Clock()
    sched = Scheduler(clock, 1.0)
    seen: list[int] = []
    chain = sched.chain(
        "t", [(1.0, lambda: seen.append(1)), (1.0, lambda: seen.append(2)), (0.5, lambda: seen.append(0))]
    )
    chain.add(1.0, lambda: seen.append(3))
    assert sched.pending_calls == 1
    clock.advance(1)
    assert seen == [0, 1, 2, 3] and sched.pending_calls == 0


def test_phone_validation() -> None:
    with pytest.raises(ValueError):
        Phone(answer="maybe")
    with pytest.raises(ValueError):
        Phone(refer="sometimes")
    assert Phone.linphone().status == "200 Ok" and not Phone.linphone().hangs_up_after_transfer
    assert Phone.baresip().hangs_up_after_transfer


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        OpenSIPSEmulator(Clock(), lambda s, d: None, version="3.6")
    with pytest.raises(ValueError):
        OpenSIPSEmulator(Clock(), lambda s, d: None, delay_scale=-1)


def test_unknown_user_t_uac_dlg_without_phones() -> None:
    emu = OpenSIPSEmulator(Clock(), lambda s, d: None)
    out: list[bytes] = []
    emu.handle_datagram(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "t_uac_dlg",
                "params": {
                    "method": "INVITE",
                    "ruri": ALICE,
                    "headers": "From: <sip:a@127.0.0.1>\r\nTo: <sip:b@127.0.0.1>\r\n",
                },
            }
        ).encode(),
        out.append,
    )
    emu.clock.advance(0.01)  # type: ignore[attr-defined]
    assert json.loads(out[0])["result"]["Status"] == "404 User Not Found"
    add_default_phones(emu)
    assert ALICE in emu.phones


# ---------------------------------------------------------------------------
# real sockets
# ---------------------------------------------------------------------------


class _Collector(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.waiting: list[tuple[int, Deferred[list[bytes]]]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        for n, d in list(self.waiting):
            if len(self.received) >= n:
                self.waiting.remove((n, d))
                d.callback(self.received)

    def wait(self, n: int) -> Deferred[list[bytes]]:
        from twisted.internet import reactor

        d: Deferred[list[bytes]] = Deferred()
        if len(self.received) >= n:
            d.callback(self.received)
        else:
            self.waiting.append((n, d))
        return d.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_start_emulator_udp(reactor: Any) -> None:
    running = start_emulator(reactor, port=0, delay_scale=0)
    client = _Collector()
    listener = _Collector()
    cport = reactor.listenUDP(0, client, interface="127.0.0.1", maxPacketSize=65535)
    lport = reactor.listenUDP(0, listener, interface="127.0.0.1")
    assert client.transport is not None
    try:
        host, port = running.mi_address
        assert host == "127.0.0.1" and port > 0
        sock = f"udp:127.0.0.1:{lport.getHost().port}"
        client.transport.write(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "event_subscribe",
                    "params": {"event": "E_DLG_STATE_CHANGED", "socket": sock},
                }
            ).encode(),
            (host, port),
        )
        await client.wait(1)
        assert json.loads(client.received[0])["result"] == "OK"
        running.emulator.add_call(ALICE, BOB)
        await listener.wait(3)
        assert [json.loads(d)["params"]["new_state"] for d in listener.received[:3]] == [2, 3, 4]
        # a big reply fits (maxPacketSize 65535)
        for _ in range(30):
            running.emulator.add_call(ALICE, BOB)
        client.transport.write(b'{"jsonrpc":"2.0","id":2,"method":"dlg_list"}', (host, port))
        await client.wait(2)
        assert len(json.loads(client.received[1])["result"]["Dialogs"]) == 31
        assert len(client.received[1]) > 8192
    finally:
        await running.stop()
        await cport.stopListening()
        await lport.stopListening()
    assert running.emulator.pending_calls == 0


@pytest_twisted.ensureDeferred
async def test_start_emulator_unix_event_socket(reactor: Any) -> None:
    running = start_emulator(reactor, port=0, delay_scale=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ev.sock")
        sock = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        try:
            replies: list[bytes] = []
            running.emulator.handle_datagram(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "event_subscribe",
                        "params": {"event": "E_CALL_HOLD", "socket": f"unix:{path}"},
                    }
                ).encode(),
                replies.append,
            )
            running.emulator.handle_datagram(
                b'{"jsonrpc":"2.0","id":2,"method":"raise_event","params":'
                b'{"event":"E_CALL_HOLD","params":"{\\"callid\\": \\"u\\"}"}}',
                replies.append,
            )
            assert json.loads(replies[1])["result"] == "OK"
            assert json.loads(sock.recv(65535))["params"] == {"callid": "u"}
        finally:
            sock.close()
            await running.stop()


def test_standalone_prints_emulator_banner() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "callapi.emulator",
            "--mi",
            "udp:127.0.0.1:0",
            "--version",
            "4.0",
            "--delay-scale",
            "0",
            "--demo-calls",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    import threading

    killer = threading.Timer(30, proc.kill)  # never hang the test run
    killer.start()
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        calls = [proc.stdout.readline() for _ in range(2)]
    finally:
        killer.cancel()
        proc.terminate()
        proc.wait(timeout=10)
    assert "EMULATOR" in banner and "NOT a real OpenSIPS" in banner and "4.0" in banner
    assert banner.startswith(EMULATOR_BANNER.format(version="4.0")[:20])
    assert all(c.startswith("demo call ") and "Call-ID" in c for c in calls)
