"""
The C{twistd callapi} plugin: one ServiceMaker line, everything else lives in
L{callapi.tap} (imported lazily, so C{twistd --help} stays cheap).
"""

from twisted.application.service import ServiceMaker

callapi = ServiceMaker(
    "callapi",
    "callapi.tap",
    "Control SIP calls through OpenSIPS over WebSocket JSON-RPC",
    "callapi",
)
