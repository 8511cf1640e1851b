"""
L{callapi.opensips.liveness.ProxyStatus}: the C{uptime} probe, transitions
and restart detection, with a L{Clock} and a L{FakeMIClient}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from callapi.errors import MIError
from callapi.interfaces import IProxyStatus
from callapi.opensips.liveness import ProxyStatus
from callapi.opensips.names import MINames
from callapi.testing.fakes import FakeMIClient

UP = {"Now": "Fri Dec  4 08:25:33 2026", "Up since": "Fri Dec  4 08:25:32 2026", "Up time": "1 [sec]"}


def make() -> tuple[Clock, FakeMIClient, ProxyStatus, list[str]]:
    clock, mi = Clock(), FakeMIClient()
    status = ProxyStatus(clock, mi, MINames())
    changes: list[str] = []
    status.watch(changes.append)
    status.start()
    return clock, mi, status, changes


def test_interface() -> None:
    assert verifyObject(IProxyStatus, make()[2])


def test_down_then_up_then_restart() -> None:
    clock, mi, status, changes = make()
    assert tuple(mi.requests[0]) == ("uptime", None, 1.0)
    mi.reply("uptime", UP)
    clock.advance(5)
    mi.time_out("uptime")  # one miss: still reachable, probed again after 1 s
    assert status.reachable
    clock.advance(1)
    mi.time_out("uptime")
    assert not status.reachable and changes == ["unreachable"]
    clock.advance(4)
    assert "unreachable since" in status.describe() and "no MI reply for 10 s" in status.describe()
    mi.time_out("uptime")
    clock.advance(1)  # probed every 1 s while down
    mi.reply("uptime", dict(UP, **{"Up since": "Fri Dec  4 08:30:00 2026"}))
    assert status.reachable and changes == ["unreachable", "reachable", "restarted"] and status.restarts == 1


def test_any_mi_answer_is_proof_of_life() -> None:
    clock, mi, status, changes = make()
    mi.error("uptime", MIError("uptime", -32601, "Method not found"))
    assert status.reachable and changes == []
    clock.advance(5)
    mi.time_out("uptime")
    clock.advance(1)
    mi.time_out("uptime")
    status.saw_reply()
    assert changes == ["unreachable", "reachable"]


def test_4_0_name() -> None:
    clock, mi = Clock(), FakeMIClient()
    names = MINames()
    names.use(["core:uptime", "dialog:list"])
    ProxyStatus(clock, mi, names).start()
    assert mi.methods() == ["core:uptime"]
