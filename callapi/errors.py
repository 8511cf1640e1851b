"""
Errors raised inside callapi and how they map onto the client API.

Two families:

  - MI-side errors (L{MIError}, L{MITimeout}, L{MIUnavailable}) come from the
    OpenSIPS Management Interface client and end a running command with an
    C{Error} notification whose C{data} is L{error_text}.
  - L{RPCError} is raised before a command starts and becomes a JSON-RPC
    error response (codes from JSON-RPC 2.0 section 5.1; see docs/protocol.md,
    "JSON-RPC error codes").
"""

from __future__ import annotations

from typing import Any

# JSON-RPC 2.0 error codes (https://www.jsonrpc.org/specification#error_object)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Server errors (-32000 .. -32099), ours:
DUPLICATE_CMD_ID = -32001
OPENSIPS_UNAVAILABLE = -32002
SHUTTING_DOWN = -32003
#: OpenSIPS does not answer (L{callapi.interfaces.IProxyStatus}): commands
#: that need it are refused at once, docs/protocol.md "JSON-RPC error codes".
OPENSIPS_UNREACHABLE = -32010


class RPCError(Exception):
    """
    A request that is refused before any command starts.

    @ivar code: JSON-RPC error code (int).
    @ivar message: short human-readable text.
    @ivar data: optional JSON value with details (e.g. the offending parameter).
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """
        @return: the JSON-RPC C{error} member: C{{"code", "message"[, "data"]}}.
        """
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(text: str) -> RPCError:
    """
    @return: an L{RPCError} -32602 "Invalid params" whose C{data} is C{text}
        (which names the parameter).
    """
    return RPCError(INVALID_PARAMS, "Invalid params", text)


class MIError(Exception):
    """
    OpenSIPS answered an MI request with a JSON-RPC error.

    @ivar method: the MI command that failed (e.g. C{"call_hold"}).
    @ivar code: the code as OpenSIPS sent it: SIP-like positive codes for
        command errors (404 "Dialog not found", 410 "Dialog not ready",
        480 "Both dialog legs are on hold", 491 "Request Pending") or
        JSON-RPC codes (-32601, -32602 ...), trace C{f_hold_unhold},
        C{h_errors}.
    @ivar message: the error message as sent.
    @ivar data: the optional C{data} member (string), or C{None}.
    """

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(method, code, message, data)
        self.method = method
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        text = f"{self.code} {self.message}"
        if self.data:
            text += f" ({self.data})"
        return text


class MITimeout(Exception):
    """
    No final reply to an MI request within its timeout.

    @ivar method: the MI command.
    @ivar timeout: the timeout that expired, in seconds.
    """

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(method, timeout)
        self.method = method
        self.timeout = timeout

    def __str__(self) -> str:
        return f"OpenSIPS did not answer MI {self.method} within {self.timeout:g} s"


class MIUnavailable(Exception):
    """
    The MI client cannot send: it is stopped, or the socket failed.
    """

    def __str__(self) -> str:
        return "OpenSIPS MI connection is not available" + (f": {self.args[0]}" if self.args else "")


class CommandTimeout(Exception):
    """
    A command waited too long for an OpenSIPS event.

    @ivar what: what was awaited (e.g. C{"E_CALL_HOLD ok/fail for leg callee"}).
    @ivar timeout: seconds waited.
    """

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(what, timeout)
        self.what = what
        self.timeout = timeout

    def __str__(self) -> str:
        return f"timed out after {self.timeout:g} s waiting for {self.what}"


def error_text(reason: BaseException) -> str:
    """
    The C{data} string of an C{Error} notification for C{reason}.

    MI errors keep OpenSIPS' code and text first, like the Go Call API
    (e.g. C{"404 Dialog not found"}); everything else is C{str(reason)}.
    """
    text = str(reason)
    return text or reason.__class__.__name__
