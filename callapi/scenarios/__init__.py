"""
The commands callapi offers, one module each, and the registry that maps a
JSON-RPC method name (case-sensitive, docs/protocol.md) to its class.

Every command class has C{method}, a static C{check(params) -> params} that
raises L{callapi.errors.RPCError} -32602 for bad input (so that no MI request
is sent), and the L{callapi.scenarios.base.Command} lifecycle.
"""

from __future__ import annotations

from callapi.scenarios.base import Command, Context, Settings
from callapi.scenarios.call_end import CallEnd
from callapi.scenarios.call_start import CallStart
from callapi.scenarios.echo import Echo
from callapi.scenarios.hold import CallHold, CallUnhold
from callapi.scenarios.transfer import CallAttendedTransfer, CallBlindTransfer

#: JSON-RPC method -> command class.
COMMANDS: dict[str, type[Command]] = {
    cls.method: cls
    for cls in (Echo, CallStart, CallEnd, CallHold, CallUnhold, CallBlindTransfer, CallAttendedTransfer)
}

__all__ = ["COMMANDS", "Command", "Context", "Settings"]
