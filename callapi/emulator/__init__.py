"""
The OpenSIPS emulator: a stand-in for OpenSIPS 3.4 / 4.0.1 (tm, dialog,
callops, mi_datagram, event_datagram) with emulated SIP phones, held to the
reference traces by C{tests/test_emulator_traces.py}.

It is a product of its own: C{twistd callapi --demo}, the benchmarks and
users' own CI run it (C{python -m callapi.emulator}).  It imports nothing of
the daemon but L{callapi.logging}.  What the traces do not show is listed
as a guess in C{docs/emulator.md}; faults the traces cannot show (lost
datagrams and events, restarts, the NOTIFY race) are injected on request
(L{Faults}, off by default).
"""

from callapi.emulator.core import OpenSIPSEmulator, add_default_phones
from callapi.emulator.events import SubscriptionInfo
from callapi.emulator.faults import Faults
from callapi.emulator.sip import Phone, default_phones
from callapi.emulator.sockets import EMULATOR_BANNER, EventSender, MIProtocol, RunningEmulator, start_emulator

__all__ = [
    "EMULATOR_BANNER",
    "EventSender",
    "Faults",
    "MIProtocol",
    "OpenSIPSEmulator",
    "Phone",
    "RunningEmulator",
    "SubscriptionInfo",
    "add_default_phones",
    "default_phones",
    "start_emulator",
]
