"""
C{CallStart} (click-to-dial, L{callapi.scenarios.call_start}) run by the
scenario harness (L{callapi.testing.scenario}: a L{FakeMIClient}, the real
L{EventHub}, a L{Clock} and a L{RecordingSink}).

The t_uac_dlg results and the E_DLG_STATE_CHANGED / E_CALL_TRANSFER params
are copied from the 3.4 reference traces (C{a_click_to_dial_*},
C{b_click_to_dial_*}, C{c_click_to_dial_*}); the command's Call-ID is set to
the trace's before it runs, so the events are exactly the recorded ones.
Caller-side traces are replayed on the trace's own time line (ms after the
t_uac_dlg request).  Every test pins the notifications and the MI requests,
and that nothing of the command is left once it ended.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from callapi.errors import RPCError
from callapi.opensips.names import MINames
from callapi.scenarios import COMMANDS, Settings
from callapi.scenarios.call_start import CLICK_TO_DIAL_SDP, CallStart
from callapi.testing.evi import (
    Dialog,
    dialog_state_changed,
    transfer_failed,
    transfer_notify,
    transfer_ok,
    transfer_started,
)
from callapi.testing.scenario import ENDED, MIFailure, MIReply, ScenarioHarness, Step

ALICE = "sip:alice@127.0.0.1"
BOB = "sip:bob@127.0.0.1"
DAVE = "sip:dave@127.0.0.1"
NOBODY = "sip:nobody@127.0.0.1"
BUSY = "sip:busy@127.0.0.1"
NOANSWER = "sip:noanswer@127.0.0.1"
OFFLINE = "sip:offline@127.0.0.1"

#: the click-to-dial offer, as sent in every a_/b_/c_ trace
TRACE_SDP = (
    "v=0\r\no=click-to-dial 0 0 IN IP4 0.0.0.0\r\ns=session\r\nc=IN IP4 0.0.0.0\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


ACCEPTED = MIReply("call_transfer", "Accepted")


class Success:
    """
    a_click_to_dial_success_notify_delay: 3->4 BEFORE the t_uac_dlg reply;
    start, ok, notifies after ok; the first dialog stays confirmed.
    """

    FIRST = "2c22ab5a-64ee-44bf-85ce-8bda1b4d671b"
    NEW = "ecb7871ad125f9ca"
    FIRST_DIALOG = Dialog(
        "316.43cfb051", "6679027252276", FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-8e84", "25ac2bd045e50f6f"
    )
    F_1_2 = FIRST_DIALOG.changed(1, 2)
    F_2_3 = FIRST_DIALOG.changed(2, 3)
    F_3_4 = FIRST_DIALOG.changed(3, 4)
    F_4_5 = FIRST_DIALOG.changed(4, 5)
    ANSWER = MIReply(
        "t_uac_dlg",
        {
            "Status": "200 Answering",
            "RURI": "sip:alice-0x564a33827400@127.0.0.1:5071",
            "Next-hop": "sip:127.0.0.1;lr;did=316.43cfb051",
            "Routes": ["<sip:127.0.0.1;lr;did=316.43cfb051>"],
            "Message": "Record-Route: <sip:127.0.0.1;lr;did=316.43cfb051>\r\nVia: SIP/2.0/UDP "
            "127.0.0.1:5060;branch=z9hG4bKa464.cb29bf.0\r\nTo: <sip:bob@127.0.0.1>;tag="
            "25ac2bd045e50f6f\r\nFrom: <sip:alice@127.0.0.1>;tag=533cb9e91f4b999cf76861c"
            "bb9ed54ed-8e84\r\nCSeq: 1 INVITE\r\nCall-ID: 2c22ab5a-64ee-44bf-85ce-8bda1b4"
            "d671b\r\nServer: baresip v1.0.0 (x86_64/linux)\r\nContact: <sip:alice-0x564a"
            "33827400@127.0.0.1:5071>\r\nAllow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSC"
            "RIBE,INFO,MESSAGE,REFER\r\nContent-Type: application/sdp\r\nContent-Length: "
            "242\r\n\r\nv=0\r\no=- 1943563910 164861044 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4"
            " 127.0.0.1\r\nt=0 0\r\na=tool:baresip 1.0.0\r\nm=audio 20080 RTP/AVP 0\r\na="
            "rtpmap:0 PCMU/8000\r\na=sendrecv\r\na=label:1\r\na=ssrc:2298735325 cname:sip:"
            "bob@127.0.0.1\r\na=minptime:20\r\na=ptime:20\r\n",
        },
    )
    START = transfer_started(FIRST, NEW, NEW, BOB)
    NEW_DIALOG = Dialog("2b6.c4a41ee3", "7362628897356", NEW, "e5a5d66019161fba", "d88afc8d222cfb24")
    N_1_2 = NEW_DIALOG.changed(1, 2)
    N_2_3 = NEW_DIALOG.changed(2, 3)
    OK = transfer_ok(FIRST, "callee", NEW, BOB, "200 Answering")
    N_3_4 = NEW_DIALOG.changed(3, 4)
    NOTIFY_100 = transfer_notify(FIRST, "", NEW, "100 Trying")
    NOTIFY_200 = transfer_notify(FIRST, "", NEW, "200 OK")
    N_4_5 = NEW_DIALOG.changed(4, 5)


class Baresip:
    """
    a_click_to_dial_success: 3->4 AFTER the t_uac_dlg reply; the first
    dialog ends (baresip hangs up after its NOTIFY) between start and ok.
    """

    FIRST = "d5b79d51-eed7-4fa5-b156-69f92e1f8b43"
    NEW = "3db24369a17bb877"
    FIRST_DIALOG = Dialog(
        "ce9.1049d432", "10909809218561", FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-4272", "b53b9c304171ef52"
    )
    F_1_2 = FIRST_DIALOG.changed(1, 2)
    F_2_3 = FIRST_DIALOG.changed(2, 3)
    F_3_4 = FIRST_DIALOG.changed(3, 4)
    F_4_5 = FIRST_DIALOG.changed(4, 5)
    ANSWER = MIReply(
        "t_uac_dlg",
        {
            "Status": "200 Answering",
            "RURI": "sip:alice-0x564a33827400@127.0.0.1:5071",
            "Next-hop": "sip:127.0.0.1;lr;did=ce9.1049d432",
            "Routes": ["<sip:127.0.0.1;lr;did=ce9.1049d432>"],
            "Message": "Record-Route: <sip:127.0.0.1;lr;did=ce9.1049d432>\r\nVia: SIP/2.0/UDP "
            "127.0.0.1:5060;branch=z9hG4bK32ae.e9b1a434.0\r\nTo: <sip:bob@127.0.0.1>;tag="
            "b53b9c304171ef52\r\nFrom: <sip:alice@127.0.0.1>;tag=533cb9e91f4b999cf76861cb"
            "b9ed54ed-4272\r\nCSeq: 1 INVITE\r\nCall-ID: d5b79d51-eed7-4fa5-b156-69f92e1f"
            "8b43\r\nServer: baresip v1.0.0 (x86_64/linux)\r\nContact: <sip:alice-0x564a3"
            "3827400@127.0.0.1:5071>\r\nAllow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCR"
            "IBE,INFO,MESSAGE,REFER\r\nContent-Type: application/sdp\r\nContent-Length: 2"
            "41\r\n\r\nv=0\r\no=- 913590951 1615589826 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 "
            "127.0.0.1\r\nt=0 0\r\na=tool:baresip 1.0.0\r\nm=audio 20008 RTP/AVP 0\r\na=r"
            "tpmap:0 PCMU/8000\r\na=sendrecv\r\na=label:1\r\na=ssrc:408416701 cname:sip:b"
            "ob@127.0.0.1\r\na=minptime:20\r\na=ptime:20\r\n",
        },
    )
    START = transfer_started(FIRST, NEW, NEW, BOB)
    NEW_DIALOG = Dialog("b88.f8b5adb4", "9394366077839", NEW, "80ccbf89a258d684", "56ee25a6cf7815dd")
    N_1_2 = NEW_DIALOG.changed(1, 2)
    N_2_3 = NEW_DIALOG.changed(2, 3)
    OK = transfer_ok(FIRST, "callee", NEW, BOB, "200 Answering")
    N_3_4 = NEW_DIALOG.changed(3, 4)
    N_4_5 = NEW_DIALOG.changed(4, 5)


class Linphone:
    """
    a_click_to_dial_success_linphone: dave (linphone) as caller; "200 Ok";
    start, ok, notify 100/200 after ok; the first dialog stays confirmed.
    """

    FIRST = "23f29e6b-b952-4f76-8686-5b38822761b8"
    NEW = "9QUwW~qulz"
    FIRST_DIALOG = Dialog(
        "02e.debc8072", "15531256630253", FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-635a", "4-Lux~f"
    )
    F_1_2 = FIRST_DIALOG.changed(1, 2)
    F_2_3 = FIRST_DIALOG.changed(2, 3)
    F_3_4 = FIRST_DIALOG.changed(3, 4)
    ANSWER = MIReply(
        "t_uac_dlg",
        {
            "Status": "200 Ok",
            "RURI": "sip:127.0.0.1:5077;transport=udp",
            "Next-hop": "sip:127.0.0.1;lr;did=02e.debc8072",
            "Routes": ["<sip:127.0.0.1;lr;did=02e.debc8072>"],
            "Message": "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK75e8.72a37113.0\r\nFrom: <sip"
            ":dave@127.0.0.1>;tag=533cb9e91f4b999cf76861cbb9ed54ed-635a\r\nTo: <sip:bob@1"
            "27.0.0.1>;tag=4-Lux~f\r\nCall-ID: 23f29e6b-b952-4f76-8686-5b38822761b8\r\nCSe"
            "q: 1 INVITE\r\nUser-Agent: Linphonec/5.1.65\r\nSupported: replaces, outbound,"
            " gruu\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SU"
            "BSCRIBE, INFO, PRACK, UPDATE\r\nContact: <sip:127.0.0.1:5077;transport=udp>;+"
            'sip.instance="<urn:uuid:dc25ebb5-de1f-0024-989a-55626937fbe5>"\r\nContent-T'
            "ype: application/sdp\r\nContent-Length: 100\r\nRecord-route: <sip:127.0.0.1;"
            "lr;did=02e.debc8072>\r\n\r\nv=0\r\no=dave 3488 1247 IN IP4 127.0.0.1\r\ns=Tal"
            "k\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 21042 RTP/AVP 0\r\n",
        },
    )
    START = transfer_started(FIRST, NEW, NEW, BOB)
    NEW_DIALOG = Dialog("284.f2f2f326", "4958040567599", NEW, "FV-VEBEL6", "5f35546085b160ee")
    N_1_2 = NEW_DIALOG.changed(1, 2)
    N_2_3 = NEW_DIALOG.changed(2, 3)
    OK = transfer_ok(FIRST, "callee", NEW, BOB, "200 Answering")
    NOTIFY_100 = transfer_notify(FIRST, "", NEW, "100 Trying")
    N_3_4 = NEW_DIALOG.changed(3, 4)
    NOTIFY_200 = transfer_notify(FIRST, "", NEW, "200 Ok")


#: a 200 answer whose members do not matter to the test
OK_200 = {
    "Status": "200 Answering",
    "RURI": "sip:alice-0x564a33827400@127.0.0.1:5071",
    "Next-hop": "sip:127.0.0.1;lr;did=1ef.a3aaea04",
    "Routes": ["<sip:127.0.0.1;lr;did=1ef.a3aaea04>"],
    "Message": "Record-Route: <sip:127.0.0.1;lr;did=1ef.a3aaea04>\r\n",
}


class Rejected:
    """
    c_click_to_dial_transfer_rejected: the first dialog ends right after
    start (4->5), then fail 486.
    """

    FIRST = "0c65a4b0-5a0d-440b-b7ba-33d50c16656d"
    NEW = "76a3b3bbc1219bee"
    FIRST_DIALOG = Dialog(
        "1ef.a3aaea04", "17460127246906", FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-8603", "217151b106360d7d"
    )
    F_1_2 = FIRST_DIALOG.changed(1, 2)
    F_2_3 = FIRST_DIALOG.changed(2, 3)
    F_3_4 = FIRST_DIALOG.changed(3, 4)
    START = transfer_started(FIRST, NEW, NEW, BUSY)
    F_4_5 = FIRST_DIALOG.changed(4, 5)
    NEW_DIALOG = Dialog("4d6.8a3b62e6", "7509450863528", NEW, "0c3b15018b3e2b69", "6806SIPpTag012")
    N_1_2 = NEW_DIALOG.changed(1, 2)
    N_2_5 = NEW_DIALOG.changed(2, 5)
    FAIL = transfer_failed(FIRST, "callee", NEW, BUSY, "486 Busy Here")


class RejectedNotify:
    """
    c_click_to_dial_transfer_rejected_notify_delay: 1->3, reply, 3->4;
    start, notify 100 Trying, fail 486, notify 486 after; the first dialog
    stays up (the Go BYE came later).
    """

    FIRST = "d9951552-0030-4f66-958b-fd9165d27f9b"
    NEW = "d22032238b6eba9a"
    FIRST_DIALOG = Dialog(
        "192.85a72f64", "2822983809624", FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-cbb6", "3e3567ec966b9a8b"
    )
    F_1_3 = FIRST_DIALOG.changed(1, 3)
    F_3_4 = FIRST_DIALOG.changed(3, 4)
    F_4_5 = FIRST_DIALOG.changed(4, 5)
    START = transfer_started(FIRST, NEW, NEW, BUSY)
    NEW_DIALOG = Dialog("92a.5cfcb605", "11172559179717", NEW, "f46c8c2be95d481f", "6806SIPpTag013")
    N_1_2 = NEW_DIALOG.changed(1, 2)
    NOTIFY_100 = transfer_notify(FIRST, "callee", NEW, "100 Trying")
    N_2_5 = NEW_DIALOG.changed(2, 5)
    FAIL = transfer_failed(FIRST, "callee", NEW, BUSY, "486 Busy Here")
    NOTIFY_486 = transfer_notify(FIRST, "", NEW, "486 Busy Here")


class UnknownCallee:
    """
    c_click_to_dial_transfer_unknown_user: start and fail (408, ;osid=)
    before "Accepted", the first dialog ends after it.
    """

    FIRST = "e9664bfa-f12a-49e9-ac06-64361e5a5eb2"
    NEW = "12b95a11cc06aaca"
    FIRST_DIALOG = Dialog(
        "51e.08f4fb46", "15485047361408", FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-a0b3", "edcc1b5f3ecfe708"
    )
    F_1_2 = FIRST_DIALOG.changed(1, 2)
    F_2_3 = FIRST_DIALOG.changed(2, 3)
    F_3_4 = FIRST_DIALOG.changed(3, 4)
    START = transfer_started(FIRST, NEW, NEW, NOBODY)
    NEW_DIALOG = Dialog("c0d.7759ce61", "14345575372151", NEW, "54d25f64cccacae0", None)
    N_1_5 = NEW_DIALOG.changed(1, 5)
    FAIL = transfer_failed(FIRST, "callee", NEW, NOBODY + ";osid=51e.08f4fb46", "408 Request Timeout")
    F_4_5 = FIRST_DIALOG.changed(4, 5)


# caller-side failures (b_click_to_dial_*), each on its trace's time line
# (ms after the t_uac_dlg request)

BUSY_FIRST = "f59685bb-f9f7-4cdf-b49c-8ba4a623952f"
BUSY_RESULT = {
    "Status": "486 Busy Here",
    "Message": (
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKe13a.f51b9167.0\r\nFrom: <sip:busy@127.0.0.1>;"
        "tag=533cb9e91f4b999cf76861cbb9ed54ed-6d53\r\nTo: <sip:bob@127.0.0.1>;tag=6806SIPpTag011\r\n"
        "Call-ID: f59685bb-f9f7-4cdf-b49c-8ba4a623952f\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ),
}
BUSY_DIALOG = Dialog(
    "7e2.5447a38", "3191298749509", BUSY_FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-6d53", "6806SIPpTag011"
)
BUSY_TRACE: list[tuple[float, Step]] = [
    (1.3, BUSY_DIALOG.changed(1, 2)),
    (505.9, BUSY_DIALOG.changed(2, 5)),
    (506.0, MIReply("t_uac_dlg", BUSY_RESULT)),
]

NOANSWER_FIRST = "8599f3cb-4033-49a1-a580-59a672425b45"
NOANSWER_DIALOG = Dialog(
    "557.61a6d1a", "8061823314454", NOANSWER_FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-247c", "6808SIPpTag023"
)
NOANSWER_TRACE: list[tuple[float, Step]] = [
    (1.0, NOANSWER_DIALOG.changed(1, 2)),
    (119463.4, NOANSWER_DIALOG.changed(2, 5)),
    (119463.5, MIReply("t_uac_dlg", {"Status": "408 Request Timeout"})),
]

OFFLINE_FIRST = "3fb6d33a-6cdc-4443-a95d-72a2e964bc6d"
OFFLINE_TRACE: list[tuple[float, Step]] = [
    (
        5497.2,
        dialog_state_changed(
            "557.51a6d1a", "8061823314453", OFFLINE_FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-dafb", None, 1, 5
        ),
    ),
    (
        5497.5,
        MIReply(
            "t_uac_dlg",
            {
                "Status": "408 Request Timeout",
                "Message": (
                    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc876.96716b93.0\r\nTo: <sip:bob@127.0.0.1>"
                    ";tag=bcaa-963cdea4ae73dd3a9adfdf0719174798\r\nFrom: <sip:offline@127.0.0.1>;tag=533cb9e91"
                    "f4b999cf76861cbb9ed54ed-dafb\r\nCall-ID: 3fb6d33a-6cdc-4443-a95d-72a2e964bc6d\r\nCSeq: 1 "
                    "INVITE\r\nServer: OpenSIPS (3.4.18 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n"
                ),
            },
        ),
    ),
]

UNKNOWN_FIRST = "78964e94-6f0a-46ff-b5e1-09c3304cd89e"
UNKNOWN_TRACE: list[tuple[float, Step]] = [
    (
        1.0,
        MIReply(
            "t_uac_dlg",
            {
                "Status": "404 User Not Found",
                "Message": (
                    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK9d96.06752d35.0\r\nTo: <sip:bob@127.0.0.1>"
                    ";tag=bcaa-0fdb5466cc0e86cdd3cbaff250ef67ab\r\nFrom: <sip:nobody@127.0.0.1>;tag=533cb9e91"
                    "f4b999cf76861cbb9ed54ed-3d7d\r\nCall-ID: 78964e94-6f0a-46ff-b5e1-09c3304cd89e\r\nCSeq: 1 "
                    "INVITE\r\nServer: OpenSIPS (3.4.18 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n"
                ),
            },
        ),
    ),
    (
        1.1,
        dialog_state_changed(
            "2a9.014c5606",
            "10593006634000",
            UNKNOWN_FIRST,
            "533cb9e91f4b999cf76861cbb9ed54ed-3d7d",
            None,
            1,
            5,
        ),
    ),
]

#: b_click_to_dial_cancel: the ringing call is cancelled (CallEnd / the
#: proxy): 2->5, and the t_uac_dlg reply only comes after fr_inv_timeout
CANCEL_FIRST = "6d2ba4b9-0ef8-42e2-b8b8-b1023e530823"
CANCEL_DIALOG = Dialog(
    "5.3151ff77", "23488042259", CANCEL_FIRST, "533cb9e91f4b999cf76861cbb9ed54ed-601c", "6808SIPpTag024"
)
CANCEL_1_2 = CANCEL_DIALOG.changed(1, 2)
CANCEL_2_5 = CANCEL_DIALOG.changed(2, 5)


def answered(caller: str = ALICE, callee: str = BOB) -> tuple[str, Any]:
    return ("CallerAnswered", {"caller": caller, "callee": callee})


def transferring(caller: str = ALICE, callee: str = BOB) -> tuple[str, Any]:
    return ("Transferring", {"caller": caller, "destination": callee})


def started(new: str, caller: str = ALICE, callee: str = BOB) -> tuple[str, Any]:
    return ("TransferStart", {"callid": new, "caller": caller, "callee": callee})


def pending(new: str, extra: str, caller: str = ALICE, callee: str = BOB) -> tuple[str, Any]:
    return ("TransferPending", {"callid": new, "caller": caller, "callee": callee, "extra": extra})


def callee_answered(new: str, caller: str = ALICE, callee: str = BOB) -> tuple[str, Any]:
    return ("CalleeAnswered", {"callid": new, "caller": caller, "callee": callee})


def error(text: str) -> tuple[str, Any]:
    return ("Error", text)


def invite(callid: str, caller: str = ALICE, callee: str = BOB) -> dict[str, Any]:
    """
    The t_uac_dlg params of the traces (a_click_to_dial_success etc.).
    """
    return {
        "method": "INVITE",
        "ruri": caller,
        "headers": f"From: <{caller}>\r\nTo: <{callee}>\r\nContact: <{caller}>\r\n"
        f"Content-Type: application/sdp\r\nCSeq: 1 INVITE\r\nCall-Id: {callid}\r\n",
        "body": TRACE_SDP,
    }


def transfer(callid: str, callee: str = BOB) -> dict[str, Any]:
    return {"callid": callid, "leg": "callee", "destination": callee}


class Env(ScenarioHarness[CallStart]):
    """
    A running CallStart (L{ScenarioHarness}), with its Call-ID.
    """

    @property
    def callid(self) -> str:
        return self.command.callid


def run(
    caller: str = ALICE,
    callee: str = BOB,
    callid: str | None = None,
    settings: Settings | None = None,
    names: MINames | None = None,
    **extra: Any,
) -> Env:
    """
    Start a CallStart; C{callid} (a trace's) replaces the generated Call-ID
    before the command runs.
    """

    def use_the_traces_callid(command: CallStart) -> None:
        if callid is not None:
            command.callid = callid

    return Env.start(
        CallStart,
        {"caller": caller, "callee": callee, **extra},
        "c1",
        settings=settings,
        names=names,
        prepare=use_the_traces_callid,
    )


def answer_and_accept(env: Env, trace: Any) -> None:
    """
    The caller answers (3->4 before the reply), the transfer is accepted.
    """
    env.play(trace.F_3_4, trace.ANSWER if hasattr(trace, "ANSWER") else MIReply("t_uac_dlg", OK_200))
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.play(ACCEPTED)


def test_registry() -> None:
    assert COMMANDS["CallStart"] is CallStart


def test_sdp_is_the_traces() -> None:
    assert CLICK_TO_DIAL_SDP == TRACE_SDP


# -- the t_uac_dlg request ----------------------------------------------------------


def test_t_uac_dlg_request() -> None:
    env = run()
    callid = env.callid
    assert str(uuid.UUID(callid)) == callid and uuid.UUID(callid).version == 4
    assert env.command.result_extra() == {"callid": callid}
    assert [tuple(r) for r in env.mi.requests] == [
        (
            "t_uac_dlg",
            {
                "method": "INVITE",
                "ruri": ALICE,
                "headers": "From: <sip:alice@127.0.0.1>\r\nTo: <sip:bob@127.0.0.1>\r\n"
                "Contact: <sip:alice@127.0.0.1>\r\nContent-Type: application/sdp\r\n"
                f"CSeq: 1 INVITE\r\nCall-Id: {callid}\r\n",
                "body": TRACE_SDP,
            },
            70.0,
        )
    ]
    assert "next_hop" not in env.mi.requests[0].params  # type: ignore[operator]
    assert env.events() == []
    assert env.hub.registrations == 1  # E_DLG_STATE_CHANGED of the first call
    assert env.command.outstanding == {"subscriptions": 1, "timers": 1, "requests": 1}


def test_t_uac_dlg_request_as_in_the_trace() -> None:
    # a_click_to_dial_success, byte for byte (with the trace's Call-ID)
    env = run(callid=Baresip.FIRST)
    assert env.requests() == [("t_uac_dlg", invite(Baresip.FIRST))]
    assert env.command.result_extra() == {"callid": Baresip.FIRST}


def test_each_command_has_its_own_callid() -> None:
    assert len({run().callid for _ in range(20)}) == 20


def test_next_hop() -> None:
    # a_click_to_dial_next_hop
    first = "7598f364-ed40-475d-b609-ca0de6da0e23"
    env = run(callid=first, settings=Settings(next_hop="sip:127.0.0.1:5060"))
    assert env.requests() == [("t_uac_dlg", {**invite(first), "next_hop": "sip:127.0.0.1:5060"})]


@pytest.mark.parametrize("ring, timeout", [(0.5, 10.5), (30, 40.0), (600, 610.0)])
def test_ring_timeout_param_sets_the_mi_timeout(ring: float, timeout: float) -> None:
    env = run(ring_timeout=ring)
    assert env.mi.requests[0].timeout == timeout


def test_settings_ring_timeout_sets_the_mi_timeout() -> None:
    env = run(settings=Settings(ring_timeout=20.0))
    assert env.mi.requests[0].timeout == 30.0


def test_40_names() -> None:
    names = MINames()
    names.use(["tm:uac_dlg", "callops:transfer", "dialog:end_dlg", "tm:uac_cancel"])
    t = Success
    env = run(callid=t.FIRST, names=names)
    env.play(
        t.F_3_4,
        MIReply("tm:uac_dlg", Success.ANSWER.result),
        MIReply("callops:transfer", "Accepted"),
        t.START,
        t.OK,
        MIReply("dialog:end_dlg", "OK"),
    )
    assert env.requests() == [
        ("tm:uac_dlg", invite(t.FIRST)),
        ("callops:transfer", transfer(t.FIRST)),
        ("dialog:end_dlg", {"dialog_id": t.FIRST}),
    ]
    assert env.events()[-2:] == [callee_answered(t.NEW), ENDED]
    env.assert_ended_clean()


def test_40_names_ring_timeout_cancel() -> None:
    names = MINames()
    names.use(["tm:uac_dlg", "tm:uac_cancel"])
    env = run(names=names, ring_timeout=1)
    env.clock.advance(1)
    assert env.mi.methods() == ["tm:uac_dlg", "tm:uac_cancel"]


# -- when the transfer is sent --------------------------------------------------------


def test_transfer_after_3_4_that_follows_the_answer() -> None:
    # a_click_to_dial_success: 1->2, reply, 2->3, 3->4
    t = Baresip
    env = run(callid=t.FIRST)
    env.play(t.F_1_2, t.ANSWER, t.F_2_3)
    assert env.events() == [answered()]
    assert env.mi.methods() == ["t_uac_dlg"]
    env.clock.advance(0.0019)
    env.play(t.F_3_4)
    assert env.requests() == [("t_uac_dlg", invite(t.FIRST)), ("call_transfer", transfer(t.FIRST))]
    assert env.mi.requests[1].timeout is None
    assert env.events() == [answered()]
    env.play(ACCEPTED)
    assert env.events() == [answered(), transferring()]


def test_transfer_at_once_when_3_4_came_before_the_answer() -> None:
    # a_click_to_dial_success_notify_delay: 1->2, 2->3, 3->4, reply
    t = Success
    env = run(callid=t.FIRST)
    env.play(t.F_1_2, t.F_2_3, t.F_3_4)
    assert env.mi.methods() == ["t_uac_dlg"] and env.events() == []
    env.play(t.ANSWER)
    assert env.events() == [answered()]
    assert env.requests() == [("t_uac_dlg", invite(t.FIRST)), ("call_transfer", transfer(t.FIRST))]


@pytest.mark.parametrize("wait", [2.0, 0.5])
def test_transfer_after_answer_confirm_wait_without_3_4(wait: float) -> None:
    t = Baresip
    env = run(callid=t.FIRST, settings=Settings(answer_confirm_wait=wait))
    env.play(t.F_1_2, t.ANSWER, t.F_2_3)
    env.clock.advance(wait * 0.99)
    assert env.mi.methods() == ["t_uac_dlg"]
    env.clock.advance(wait * 0.01)
    assert env.requests() == [("t_uac_dlg", invite(t.FIRST)), ("call_transfer", transfer(t.FIRST))]
    # a late 3->4 does not send a second one
    env.play(t.F_3_4)
    env.clock.advance(10)
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]


def test_3_4_during_the_wait_sends_once() -> None:
    t = Baresip
    env = run(callid=t.FIRST)
    env.play(t.ANSWER)
    env.clock.advance(1)
    env.play(t.F_3_4)
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.clock.advance(5)
    env.play(t.F_3_4)
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]


def test_3_4_of_another_call_does_not_send_the_transfer() -> None:
    t = Baresip
    env = run(callid=t.FIRST)
    env.play(t.ANSWER, Success.F_3_4, t.N_3_4)
    assert env.mi.methods() == ["t_uac_dlg"]
    env.clock.advance(2)
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]


def test_confirmed_dialog_without_reply_counts_as_answered() -> None:
    """
    3->4 proves a 2xx and its ACK: if the t_uac_dlg reply (a large UDP
    datagram) is lost, go on after answer_confirm_wait instead of leaving
    the caller in a silent call; a late reply is then ignored.
    """
    t = Success
    env = run(callid=t.FIRST)
    env.play(t.F_1_2, t.F_2_3, t.F_3_4)
    env.clock.advance(1.99)
    assert env.mi.methods() == ["t_uac_dlg"] and env.events() == []
    env.clock.advance(0.01)
    assert env.events() == [answered()]
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.play(t.ANSWER)
    assert env.events() == [answered()]


def test_invite_reply_lost_ends_the_first_call() -> None:
    t = Success
    env = run(callid=t.FIRST, ring_timeout=1)
    env.play(t.F_1_2)
    env.mi.time_out("t_uac_dlg")
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": t.FIRST})
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events()[-1] == ENDED and env.events()[0][0] == "Error"


@pytest.mark.parametrize("code, message", [(404, "Dialog not found"), (410, "Dialog not ready")])
def test_transfer_404_410_retried(code: int, message: str) -> None:
    t = Success
    env = run(callid=t.FIRST)
    env.play(t.F_3_4, t.ANSWER)
    env.play(MIFailure("call_transfer", code, message))
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.clock.advance(0.49)
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.clock.advance(0.01)
    assert env.requests() == [
        ("t_uac_dlg", invite(t.FIRST)),
        ("call_transfer", transfer(t.FIRST)),
        ("call_transfer", transfer(t.FIRST)),
    ]
    env.play(ACCEPTED, t.START, t.OK, MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [answered(), transferring(), started(t.NEW), callee_answered(t.NEW), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize("retries, delay", [(3, 0.5), (1, 0.2), (0, 0.5)])
def test_transfer_404_retries_exhausted(retries: int, delay: float) -> None:
    t = Success
    env = run(callid=t.FIRST, settings=Settings(transfer_retries=retries, transfer_retry_delay=delay))
    env.play(t.F_3_4, t.ANSWER)
    for _ in range(retries):
        env.play(MIFailure("call_transfer", 404, "Dialog not found"))
        env.clock.advance(delay)
    env.play(MIFailure("call_transfer", 404, "Dialog not found"))
    assert env.requests() == (
        [("t_uac_dlg", invite(t.FIRST))]
        + [("call_transfer", transfer(t.FIRST))] * (retries + 1)
        + [("dlg_end_dlg", {"dialog_id": t.FIRST})]
    )
    assert env.events() == [answered()]
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [answered(), error("404 Dialog not found"), ENDED]
    env.assert_ended_clean()


def test_transfer_491_not_retried_first_call_ended() -> None:
    t = Success
    env = run(callid=t.FIRST)
    env.play(t.F_3_4, t.ANSWER, MIFailure("call_transfer", 491, "Request Pending"))
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer", "dlg_end_dlg"]
    env.play(MIFailure("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert env.events() == [answered(), error("491 Request Pending"), ENDED]
    env.assert_ended_clean()


# -- success ------------------------------------------------------------------------------


def test_full_success_sequence() -> None:
    # a_click_to_dial_success_notify_delay, with its first NOTIFY overtaking
    # ok (notifies before ok are seen in e_attended_transfer): the first
    # dialog stays up, so it is ended with dlg_end_dlg
    t = Success
    env = run(callid=t.FIRST)
    env.replay([(1.2, t.F_1_2), (1.6, t.F_2_3), (1.9, t.F_3_4), (2.0, t.ANSWER)])
    assert env.events() == [answered()]
    env.replay(
        [
            (2.5, ACCEPTED),
            (3.5, t.START),
            (4.3, t.N_1_2),
            (4.7, t.N_2_3),
            (4.75, t.NOTIFY_100),
            (4.8, t.OK),
            (6.2, t.N_3_4),
        ]
    )
    assert env.events() == [
        answered(),
        transferring(),
        started(t.NEW),
        pending(t.NEW, "100 Trying"),
        callee_answered(t.NEW),
    ]
    assert env.requests() == [
        ("t_uac_dlg", invite(t.FIRST)),
        ("call_transfer", transfer(t.FIRST)),
        ("dlg_end_dlg", {"dialog_id": t.FIRST}),
    ]
    env.play(t.NOTIFY_200, MIReply("dlg_end_dlg", "OK"), t.F_4_5)
    assert env.events() == [
        answered(),
        transferring(),
        started(t.NEW),
        pending(t.NEW, "100 Trying"),
        callee_answered(t.NEW),
        ENDED,
    ]
    env.assert_ended_clean()


def test_success_notify_delay_trace_order() -> None:
    # a_click_to_dial_success_notify_delay as recorded: notifies after ok
    t = Success
    env = run(callid=t.FIRST)
    env.play(
        t.F_1_2, t.F_2_3, t.F_3_4, t.ANSWER, ACCEPTED, t.START, t.N_1_2, t.N_2_3, t.OK, t.N_3_4, t.NOTIFY_100
    )
    env.play(MIReply("dlg_end_dlg", "OK"), t.NOTIFY_200, t.N_4_5)
    assert env.events() == [answered(), transferring(), started(t.NEW), callee_answered(t.NEW), ENDED]
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer", "dlg_end_dlg"]
    env.assert_ended_clean()


def test_success_first_dialog_gone_before_ok() -> None:
    # a_click_to_dial_success: the first dialog ends (4->5) after start:
    # no dlg_end_dlg
    t = Baresip
    env = run(callid=t.FIRST)
    env.play(t.F_1_2, t.ANSWER, t.F_2_3, t.F_3_4, ACCEPTED, t.START, t.F_4_5, t.N_1_2, t.N_2_3, t.OK, t.N_3_4)
    assert env.events() == [answered(), transferring(), started(t.NEW), callee_answered(t.NEW), ENDED]
    assert env.requests() == [("t_uac_dlg", invite(t.FIRST)), ("call_transfer", transfer(t.FIRST))]
    env.assert_ended_clean()


def test_success_linphone() -> None:
    # a_click_to_dial_success_linphone: caller dave, "200 Ok"
    t = Linphone
    env = run(caller=DAVE, callid=t.FIRST)
    env.play(
        t.F_1_2,
        t.F_2_3,
        t.ANSWER,
        t.F_3_4,
        ACCEPTED,
        t.START,
        t.N_1_2,
        t.N_2_3,
        t.OK,
        t.NOTIFY_100,
        t.N_3_4,
        t.NOTIFY_200,
    )
    assert env.requests() == [
        ("t_uac_dlg", invite(t.FIRST, caller=DAVE)),
        ("call_transfer", transfer(t.FIRST)),
        ("dlg_end_dlg", {"dialog_id": t.FIRST}),
    ]
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [
        answered(DAVE),
        transferring(DAVE),
        started(t.NEW, DAVE),
        callee_answered(t.NEW, DAVE),
        ENDED,
    ]
    env.assert_ended_clean()


def test_success_dlg_end_dlg_404_is_not_an_error() -> None:
    t = Success
    env = run(callid=t.FIRST)
    answer_and_accept(env, t)
    env.play(t.START, t.OK, MIFailure("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert env.events() == [answered(), transferring(), started(t.NEW), callee_answered(t.NEW), ENDED]
    env.assert_ended_clean()


def test_success_start_before_accepted() -> None:
    t = Success
    env = run(callid=t.FIRST)
    env.play(t.F_3_4, t.ANSWER, t.START, t.NOTIFY_100)
    assert env.events() == [answered()]
    env.play(ACCEPTED)
    assert env.events() == [answered(), transferring(), started(t.NEW), pending(t.NEW, "100 Trying")]


# -- the caller does not answer -----------------------------------------------------------


@pytest.mark.parametrize(
    "caller, first, timeline, status, ring",
    [
        (BUSY, BUSY_FIRST, BUSY_TRACE, "486 Busy Here", None),
        (NOANSWER, NOANSWER_FIRST, NOANSWER_TRACE, "408 Request Timeout", 130),
        (OFFLINE, OFFLINE_FIRST, OFFLINE_TRACE, "408 Request Timeout", None),
        (NOBODY, UNKNOWN_FIRST, UNKNOWN_TRACE, "404 User Not Found", None),
    ],
    ids=["busy", "noanswer", "offline", "unknown"],
)
def test_caller_failures(
    caller: str, first: str, timeline: list[tuple[float, Step]], status: str, ring: float | None
) -> None:
    extra: dict[str, Any] = {} if ring is None else {"ring_timeout": ring}
    env = run(caller=caller, callid=first, **extra)
    env.replay(timeline)
    assert env.events() == [error(status), ENDED]
    assert env.requests() == [("t_uac_dlg", invite(first, caller=caller))]
    env.assert_ended_clean()


def test_caller_busy_reply_before_the_1_s_grace() -> None:
    # b_click_to_dial_busy: 2->5 then, 0.1 ms later, the 486: its Status wins
    env = run(caller=BUSY, callid=BUSY_FIRST)
    env.replay(BUSY_TRACE[:2])
    assert env.events() == []
    env.clock.advance(0.9)
    env.play(MIReply("t_uac_dlg", BUSY_RESULT))
    assert env.events() == [error("486 Busy Here"), ENDED]
    env.assert_ended_clean()


def test_first_dialog_deleted_while_ringing() -> None:
    # b_click_to_dial_cancel: the call is cancelled (e.g. CallEnd on the
    # Started callid) while ringing; the t_uac_dlg reply takes fr_inv_timeout
    env = run(caller=NOANSWER, callid=CANCEL_FIRST)
    env.replay([(1.2, CANCEL_1_2), (1502.7, CANCEL_2_5)])
    env.clock.advance(0.99)
    assert env.events() == []
    env.clock.advance(0.01)
    assert env.events() == [
        error(f"487 Request Terminated: the call to {NOANSWER} ended before it was answered"),
        ENDED,
    ]
    assert env.mi.requests[0].state == "cancelled"
    assert env.mi.methods() == ["t_uac_dlg"]
    env.assert_ended_clean()


def test_unexpected_t_uac_dlg_result() -> None:
    env = run()
    env.play(MIReply("t_uac_dlg", "OK"))
    assert env.events() == [error("unexpected t_uac_dlg result 'OK'"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize(
    "code, message, data, text",
    [
        (400, "From missing", None, "400 From missing"),
        (
            -32602,
            "Invalid params",
            "Too few or too many parameters",
            "-32602 Invalid params (Too few or too many parameters)",
        ),
    ],
)
def test_t_uac_dlg_mi_error(code: int, message: str, data: str | None, text: str) -> None:
    env = run()
    env.play(MIFailure("t_uac_dlg", code, message, data))
    assert env.events() == [error(text), ENDED]
    assert env.mi.methods() == ["t_uac_dlg"]
    env.assert_ended_clean()


def test_t_uac_dlg_mi_timeout() -> None:
    env = run()
    env.mi.time_out("t_uac_dlg")
    assert env.events() == [error("OpenSIPS did not answer MI t_uac_dlg within 70 s"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize("ring, text", [(None, "60"), (0.5, "0.5"), (30, "30"), (600, "600")])
def test_ring_timeout_cancels(ring: float | None, text: str) -> None:
    extra: dict[str, Any] = {} if ring is None else {"ring_timeout": ring}
    env = run(caller=NOANSWER, callid=NOANSWER_FIRST, **extra)
    seconds = 60.0 if ring is None else float(ring)
    env.replay(NOANSWER_TRACE[:1])
    env.clock.advance(seconds - 0.001 - env.clock.seconds())
    assert env.events() == [] and env.mi.methods() == ["t_uac_dlg"]
    env.clock.advance(0.001)
    assert env.requests() == [
        ("t_uac_dlg", invite(NOANSWER_FIRST, caller=NOANSWER)),
        ("t_uac_cancel", {"callid": NOANSWER_FIRST, "cseq": "1"}),
    ]
    # the Error waits for the cancel's outcome (a 2xx may cross it):
    # b_click_to_dial_cancel: the dialog goes 2->5
    assert env.events() == []
    env.play(MIReply("t_uac_cancel", "OK"), NOANSWER_TRACE[1][1])
    assert env.events() == [
        error(f"408 Request Timeout: {NOANSWER} did not answer within {text} s (INVITE cancelled)"),
        ENDED,
    ]
    env.assert_ended_clean()
    # the late 408 of the cancelled INVITE: nothing more
    env.clock.advance(200)
    assert len(env.events()) == 2


def test_answer_crossing_the_cancel_is_hung_up() -> None:
    """
    The caller answers just as the ring timeout fires: the dialog is
    confirmed after the CANCEL left, so callapi ends it through the proxy
    before reporting the timeout; the caller is not left in a silent call.
    """
    env = run(caller=NOANSWER, callid=NOANSWER_FIRST, ring_timeout=3)
    env.replay(NOANSWER_TRACE[:1])
    env.clock.advance(3 - env.clock.seconds())
    env.play(NOANSWER_DIALOG.changed(2, 3))
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": NOANSWER_FIRST})
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [
        error(f"408 Request Timeout: {NOANSWER} did not answer within 3 s (INVITE cancelled)"),
        ENDED,
    ]


def test_cancel_without_outcome_ends_the_dialog_anyway() -> None:
    env = run(caller=NOANSWER, callid=NOANSWER_FIRST, ring_timeout=3)
    env.replay(NOANSWER_TRACE[:1])
    env.clock.advance(3 - env.clock.seconds())
    env.clock.advance(2)  # Settings.cancel_grace
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": NOANSWER_FIRST})
    env.play(MIFailure("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert env.events()[-1] == ENDED and env.events()[0][0] == "Error"


def test_settings_ring_timeout() -> None:
    env = run(settings=Settings(ring_timeout=5.0))
    env.clock.advance(5)
    env.clock.advance(2)  # no dialog event at all: end it through the proxy anyway
    env.play(MIFailure("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert env.events()[0] == error(
        f"408 Request Timeout: no answer to the INVITE to {ALICE} and no dialog event within "
        "5 s (INVITE cancelled; is OpenSIPS overloaded or the event subscription broken?)"
    )


def test_answer_cancels_the_ring_timeout() -> None:
    t = Success
    env = run(callid=t.FIRST, ring_timeout=1)
    env.clock.advance(0.9)
    env.play(t.F_3_4, t.ANSWER, ACCEPTED)
    env.clock.advance(5)
    assert "t_uac_cancel" not in env.mi.methods()
    assert env.events() == [answered(), transferring()]


# -- the caller hangs up before the transfer ---------------------------------------------


def test_caller_hangs_up_before_the_transfer() -> None:
    # answered, the 3->4 event lost, then 4->5 within answer_confirm_wait
    t = Baresip
    env = run(callid=t.FIRST)
    env.play(t.F_1_2, t.ANSWER, t.F_2_3)
    env.clock.advance(1)
    env.play(t.F_4_5)
    assert env.events() == [answered(), error(f"{ALICE} hung up before the transfer to {BOB}"), ENDED]
    assert env.mi.methods() == ["t_uac_dlg"]
    env.assert_ended_clean()


# -- the callee side fails ----------------------------------------------------------------


def test_callee_fail_ends_the_first_call() -> None:
    # c_click_to_dial_transfer_rejected_notify_delay: the first dialog is up
    t = RejectedNotify
    env = run(callee=BUSY, callid=t.FIRST)
    env.play(t.F_1_3, MIReply("t_uac_dlg", OK_200), t.F_3_4)
    assert env.requests() == [
        ("t_uac_dlg", invite(t.FIRST, callee=BUSY)),
        ("call_transfer", transfer(t.FIRST, BUSY)),
    ]
    env.play(ACCEPTED, t.START, t.N_1_2, t.NOTIFY_100, t.N_2_5, t.FAIL)
    assert env.events() == [
        answered(callee=BUSY),
        transferring(callee=BUSY),
        started(t.NEW, callee=BUSY),
        pending(t.NEW, "100 Trying", callee=BUSY),
    ]
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": t.FIRST})
    env.play(t.NOTIFY_486, MIReply("dlg_end_dlg", "OK"), t.F_4_5)
    assert env.events() == [
        answered(callee=BUSY),
        transferring(callee=BUSY),
        started(t.NEW, callee=BUSY),
        pending(t.NEW, "100 Trying", callee=BUSY),
        error("transfer failed with status 486 Busy Here"),
        ENDED,
    ]
    env.assert_ended_clean()


def test_callee_fail_first_call_already_gone() -> None:
    # c_click_to_dial_transfer_rejected: 4->5 of the first call before fail
    t = Rejected
    env = run(callee=BUSY, callid=t.FIRST)
    env.play(
        t.F_1_2,
        t.F_2_3,
        t.F_3_4,
        MIReply("t_uac_dlg", OK_200),
        ACCEPTED,
        t.START,
        t.F_4_5,
        t.N_1_2,
        t.N_2_5,
        t.FAIL,
    )
    assert env.events() == [
        answered(callee=BUSY),
        transferring(callee=BUSY),
        started(t.NEW, callee=BUSY),
        error("transfer failed with status 486 Busy Here"),
        ENDED,
    ]
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.assert_ended_clean()


def test_callee_unknown_start_and_fail_before_accepted() -> None:
    # c_click_to_dial_transfer_unknown_user
    t = UnknownCallee
    env = run(callee=NOBODY, callid=t.FIRST)
    env.play(t.F_1_2, t.F_2_3, t.F_3_4, MIReply("t_uac_dlg", OK_200), t.START, t.N_1_5, t.FAIL)
    assert env.events() == [answered(callee=NOBODY)]
    env.play(ACCEPTED)
    assert env.events() == [
        answered(callee=NOBODY),
        transferring(callee=NOBODY),
        started(t.NEW, callee=NOBODY),
    ]
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": t.FIRST})
    env.play(t.F_4_5, MIFailure("dlg_end_dlg", 404, "Requested Dialog not found"))
    assert env.events() == [
        answered(callee=NOBODY),
        transferring(callee=NOBODY),
        started(t.NEW, callee=NOBODY),
        error("transfer failed with status 408 Request Timeout"),
        ENDED,
    ]
    env.assert_ended_clean()


def test_first_call_gone_during_the_transfer_and_no_start() -> None:
    # the NOTIFY race lost (d_blind_transfer_caller_success) in a click-to-dial
    t = Baresip
    env = run(callid=t.FIRST)
    env.play(t.F_1_2, t.ANSWER, t.F_2_3, t.F_3_4, ACCEPTED, t.F_4_5)
    env.clock.advance(2)
    assert env.events() == [
        answered(),
        transferring(),
        error(
            f"timed out after 2 s waiting for E_CALL_TRANSFER start after the call {t.FIRST} "
            "ended (if the transferee hung up itself, OpenSIPS may not have linked its new call)"
        ),
        ENDED,
    ]
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer"]
    env.assert_ended_clean()


# -- a failed transfer must not leave the caller in a call with nobody ------------


def test_refer_rejected_code_result_ends_the_first_call() -> None:
    t = Success
    env = run(callid=t.FIRST)
    env.play(t.F_3_4, t.ANSWER, MIReply("call_transfer", {"Code": 603, "Reason": "Declined"}))
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": t.FIRST})
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [answered(), error("REFER rejected with status 603 Declined"), ENDED]
    env.assert_ended_clean()


@pytest.mark.parametrize("started_, seconds", [(False, 15), (True, 130)], ids=["no-start", "no-outcome"])
def test_transfer_timeout_ends_the_first_call(started_: bool, seconds: float) -> None:
    # d_blind_transfer_refer_rejected in a click-to-dial: the caller's phone
    # refuses the REFER, OpenSIPS said "Accepted" and raises nothing
    t = Success
    # behaviour change (issue 7): the callee ring timeout (60 s) would fire first
    env = run(callid=t.FIRST, settings=Settings(callee_ring_timeout=600.0))
    answer_and_accept(env, t)
    if started_:
        env.play(t.START)
    env.clock.advance(seconds)
    assert env.requests()[-1] == ("dlg_end_dlg", {"dialog_id": t.FIRST})
    assert "Error" not in [e for e, _ in env.events()]
    env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events()[-2][0] == "Error" and env.events()[-1] == ENDED
    assert env.events()[-2][1].startswith(f"timed out after {seconds:g} s waiting for ")
    env.assert_ended_clean()


def test_transfer_start_timeout_error_text() -> None:
    # what the Error says (the first call is ended, see above)
    t = Success
    env = run(callid=t.FIRST, settings=Settings(transfer_start_timeout=0.3))
    answer_and_accept(env, t)
    env.clock.advance(0.3)
    if "dlg_end_dlg" in env.mi.methods():  # once the bug above is fixed
        env.play(MIReply("dlg_end_dlg", "OK"))
    assert env.events() == [
        answered(),
        transferring(),
        error(
            "timed out after 0.3 s waiting for E_CALL_TRANSFER start: the REFER may have been "
            "rejected or the transferee never sent its INVITE"
        ),
        ENDED,
    ]
    env.assert_ended_clean()


# -- nothing left behind ------------------------------------------------------------------


def test_nothing_after_ended() -> None:
    t = Success
    env = run(callid=t.FIRST)
    answer_and_accept(env, t)
    env.play(t.START, t.OK, MIReply("dlg_end_dlg", "OK"))
    done = list(env.events())
    env.play(
        t.NOTIFY_100,
        t.NOTIFY_200,
        t.F_4_5,
        t.F_3_4,
        t.START,
        t.OK,
        transfer_failed(t.FIRST, "callee", t.NEW, BOB, "486 Busy Here"),
    )
    env.clock.advance(10000)
    env.command.fail("late")
    env.command.end()
    env.command.abort()
    assert env.events() == done
    env.assert_ended_clean()


def test_abort_while_ringing() -> None:
    env = run(caller=NOANSWER, callid=NOANSWER_FIRST)
    env.command.abort("client disconnected")
    assert env.mi.requests[0].state == "cancelled"
    # the caller's phone must not be left ringing or in a call with nobody
    assert env.requests()[1:] == [
        ("t_uac_cancel", {"callid": NOANSWER_FIRST, "cseq": "1"}),
        ("dlg_end_dlg", {"dialog_id": NOANSWER_FIRST}),
    ]
    assert env.events() == []
    assert env.hub.registrations == 0 and env.clock.getDelayedCalls() == []


def test_a_30_minute_click_to_dial_call() -> None:
    # the CallStart ends right after the transfer; the call itself then runs
    # 30 minutes (events of both calls keep coming): nothing of the command
    # is left, nothing is reported
    t = Success
    env = run(callid=t.FIRST)
    env.play(
        t.F_1_2,
        t.F_2_3,
        t.F_3_4,
        t.ANSWER,
        ACCEPTED,
        t.START,
        t.N_1_2,
        t.N_2_3,
        t.OK,
        t.N_3_4,
        MIReply("dlg_end_dlg", "OK"),
        t.F_4_5,
    )
    done = list(env.events())
    assert done[-1] == ENDED
    env.assert_ended_clean()
    for _minute in range(30):
        env.clock.advance(60)
        env.play(
            ("E_CALL_HOLD", {"callid": t.NEW, "leg": "caller", "action": "hold", "state": "start"}),
            t.NOTIFY_200,
        )
        assert env.clock.getDelayedCalls() == []
    env.play(t.N_4_5)
    assert env.clock.seconds() >= 1800
    assert env.events() == done
    env.assert_ended_clean()
    assert env.mi.methods() == ["t_uac_dlg", "call_transfer", "dlg_end_dlg"]


# -- ring_timeout validation ------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, "5", True, False, 601, 600.5, [5], float("nan"), float("inf")])
def test_ring_timeout_refused(value: Any) -> None:
    with pytest.raises(RPCError) as caught:
        CallStart.check({"caller": ALICE, "callee": BOB, "ring_timeout": value})
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        -32602,
        "Invalid params",
        "ring_timeout must be a number of seconds, 0 < ring_timeout <= 600",
    )


@pytest.mark.parametrize("value", [0.5, 600, 1, 60.0])
def test_ring_timeout_accepted(value: float) -> None:
    assert CallStart.check({"caller": ALICE, "callee": BOB, "ring_timeout": value}) == {
        "caller": ALICE,
        "callee": BOB,
        "ring_timeout": float(value),
    }


def test_ring_timeout_null_is_the_default() -> None:
    assert CallStart.check({"caller": ALICE, "callee": BOB, "ring_timeout": None}) == {
        "caller": ALICE,
        "callee": BOB,
    }


@pytest.mark.parametrize(
    "params, data",
    [
        ({"callee": BOB}, "missing parameter caller"),
        ({"caller": ALICE}, "missing parameter callee"),
        ({"caller": "alice", "callee": BOB}, "caller is not a valid SIP URI (e.g. sip:alice@example.com)"),
        (
            {"caller": ALICE, "callee": "sip:bob@x\r\nVia: evil"},
            "callee is not a valid SIP URI (e.g. sip:alice@example.com)",
        ),
        ({"caller": ALICE, "callee": BOB, "callid": "x"}, "unknown parameter callid"),
    ],
)
def test_check(params: dict[str, Any], data: str) -> None:
    with pytest.raises(RPCError) as caught:
        CallStart.check(params)
    assert (caught.value.code, caught.value.data) == (-32602, data)


def test_shutdown_while_ringing_releases_the_call() -> None:
    env = run(caller=NOANSWER, callid=NOANSWER_FIRST)
    env.command.shutdown()
    assert env.requests()[1:] == [
        ("t_uac_cancel", {"callid": NOANSWER_FIRST, "cseq": "1"}),
        ("dlg_end_dlg", {"dialog_id": NOANSWER_FIRST}),
    ]
    assert env.events() == [error("callapi is shutting down"), ENDED]
