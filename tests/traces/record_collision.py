#!/usr/bin/env python3
"""
Record C{dlg_end_dlg_collision.jsonl} against the reference harness
(../shared/harness, up): a dialog whose Call-ID equals another live
dialog's internal ID, then C{dlg_end_dlg dialog_id=<that ID>}.

Standard library only; the output has the format of the harness'
C{record.py} (one JSON object per line: C{t_ms} since the start, C{dir}
C{mi-request} / C{mi-reply} / C{event} / C{note}, C{data}).  Usage::

    tests/traces/record_collision.py [--mi 127.0.0.1:8080] [--out FILE]

Steps (see README.md here): subscribe E_DLG_STATE_CHANGED; click-to-dial
alice -> bob with Call-ID C{collision-a-<n>} (dialog A); C{dlg_list
callid=} A -> its C{ID}; click-to-dial cindy -> bob with C{Call-Id: <ID of
A>} (dialog B); C{dlg_list}; C{dlg_end_dlg dialog_id=<ID of A>};
C{dlg_list}; end what is left by Call-ID; unsubscribe.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import time

SDP = (
    "v=0\r\no=click-to-dial 0 0 IN IP4 0.0.0.0\r\ns=session\r\nc=IN IP4 0.0.0.0\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class Recorder:
    def __init__(self, mi: tuple[str, int]) -> None:
        self.mi = mi
        self.t0 = time.monotonic()
        self.lines: list[dict[str, object]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.events = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.events.bind(("127.0.0.1", 0))
        self.next_id = 1

    def now(self) -> float:
        return round((time.monotonic() - self.t0) * 1000.0, 1)

    def log(self, direction: str, data: object) -> None:
        self.lines.append({"t_ms": self.now(), "dir": direction, "data": data})

    def note(self, text: str) -> None:
        self.log("note", text)

    def pump(self, seconds: float, want_id: int | None = None) -> object:
        """Read replies and events for up to C{seconds}; return the reply of C{want_id}."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock, self.events], [], [], left)
            for s in ready:
                data = s.recv(65535)
                msg = json.loads(data)
                if s is self.events:
                    self.log("event", msg)
                    continue
                self.log("mi-reply", msg)
                if want_id is not None and msg.get("id") == want_id:
                    return msg
        return None

    def call(self, method: str, params: dict[str, object], timeout: float = 5.0) -> object:
        req = {"jsonrpc": "2.0", "method": method, "id": self.next_id, "params": params}
        self.next_id += 1
        self.log("mi-request", req)
        self.sock.sendto(json.dumps(req).encode(), self.mi)
        reply = self.pump(timeout, self.next_id - 1)
        if reply is None:
            raise SystemExit(f"no reply to {method}")
        return reply

    def dial(self, caller: str, callee: str, callid: str) -> object:
        headers = (
            f"From: <{caller}>\r\nTo: <{callee}>\r\nContact: <{caller}>\r\n"
            f"Content-Type: application/sdp\r\nCSeq: 1 INVITE\r\nCall-Id: {callid}\r\n"
        )
        return self.call(
            "t_uac_dlg", {"method": "INVITE", "ruri": caller, "headers": headers, "body": SDP}, 15
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mi", default="127.0.0.1:8080")
    ap.add_argument("--out", default="dlg_end_dlg_collision.jsonl")
    args = ap.parse_args()
    host, port = args.mi.rsplit(":", 1)
    r = Recorder((host, int(port)))
    socket_uri = "udp:127.0.0.1:%d" % r.events.getsockname()[1]
    r.call("event_subscribe", {"event": "E_DLG_STATE_CHANGED", "socket": socket_uri, "expire": 120})
    a = f"collision-a-{int(time.time())}"
    r.note(f"alice dials sip:bob@127.0.0.1 (dialog A, Call-ID {a})")
    r.dial("sip:alice@127.0.0.1", "sip:bob@127.0.0.1", a)
    r.pump(1.0)
    listed = r.call("dlg_list", {"callid": a})
    did = listed["result"]["Dialog"]["ID"]  # type: ignore[index]
    r.note(f"cindy dials sip:bob@127.0.0.1 (dialog B, Call-ID {did} = the ID of dialog A)")
    r.dial("sip:cindy@127.0.0.1", "sip:bob@127.0.0.1", did)
    r.pump(1.0)
    r.call("dlg_list", {})
    r.note(f"dlg_end_dlg dialog_id={did}: the ID of A and the Call-ID of B")
    r.call("dlg_end_dlg", {"dialog_id": did})
    r.pump(1.5)
    r.call("dlg_list", {})
    r.note("end what is left, by Call-ID")
    for callid in (a, did):
        r.call("dlg_end_dlg", {"dialog_id": callid})
        r.pump(0.5)
    r.call("dlg_list", {})
    r.call("event_subscribe", {"event": "E_DLG_STATE_CHANGED", "socket": socket_uri, "expire": 0})
    with open(args.out, "w") as f:
        for line in r.lines:
            f.write(json.dumps(line) + "\n")
    print(f"{len(r.lines)} lines -> {args.out}")


if __name__ == "__main__":
    main()
