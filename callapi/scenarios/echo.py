"""
C{Echo}: answers C{Reply} with the request's params, then C{Ended}.  Needs no
OpenSIPS; used to check the WebSocket path (Go Call API C{pkg/cmd/echo.go}).
"""

from __future__ import annotations

from typing import Any

from callapi.scenarios.base import Command


class Echo(Command):
    """
    Params: anything (an object).  Events: C{Reply} (data = the params
    object as received), C{Ended}.
    """

    method = "Echo"
    needs_opensips = False

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        Accept any params object; it is echoed as it came (without C{cmd_id}).
        """
        return params

    def start(self) -> None:
        self.emit("Reply", self.params)
        self.end()
