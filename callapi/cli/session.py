"""
What the server's messages mean for one command and which exit code
results: L{CommandSession}, shared by C{callapi-client} (fed by a WebSocket)
and C{callapi-cmd} (fed in-process).  Pure: no Autobahn, no reactor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from callapi.cli.args import EXIT_COMMAND_FAILED, EXIT_ERROR, EXIT_OK, load_json

REQUEST_ID = 1

_EXCERPT_CHARS = 200

_MISSING: Any = object()


def compact(value: Any) -> str:
    """Encode C{value} as compact one-line JSON (no spaces, UTF-8 kept as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _excerpt(text: str) -> str:
    """Shorten C{text} to at most about L{_EXCERPT_CHARS} characters."""
    if len(text) <= _EXCERPT_CHARS:
        return text
    return text[:_EXCERPT_CHARS] + "..."


def _is_our_id(value: object, request_id: int) -> bool:
    """True if a response C{id} is exactly our integer id (C{true}/C{1.0} are not)."""
    return type(value) is int and value == request_id


class CommandSession:
    """What the server's messages mean for one command, and the exit code.

    Pure: no Autobahn, no reactor.  The shell calls L{request} once the
    WebSocket is open and sends its text, then feeds every received frame to
    L{received} and every other happening to L{connection_failed},
    L{handshake_failed}, L{connection_closed} or L{timed_out}.
    Each of those returns the exit code once the outcome is known (C{None}
    while the command runs); the first outcome wins and later inputs are
    absorbed without output.

    Output goes through the C{out}/C{err} callables, one line per call
    (without newline).  On C{out}: the C{Started} line (C{Started} plus the
    result's other keys as compact JSON, e.g. C{Started {"cmd_id":"c1"}}) and
    one line per notification of our C{cmd_id}: C{EVENT} plus compact JSON
    C{data} when present; with C{json_output}, each such message as compact
    raw JSON instead; with C{quiet}, nothing.  On C{err}: one line per
    failure, prefixed C{callapi-client:}; in quiet mode the C{Error}
    notification's data too, so the reason is not lost.

    Notifications that arrive before the C{Started} result (the contract
    forbids it, but a racy server might) are held and replayed after it;
    notifications of other C{cmd_id} values are ignored.

    @param url: only used in messages.
    @param method: the JSON-RPC method to call.
    @param params: the request's C{params} object.
    """

    def __init__(
        self,
        url: str,
        method: str,
        params: dict[str, Any],
        *,
        out: Callable[[str], None],
        err: Callable[[str], None],
        quiet: bool = False,
        json_output: bool = False,
        request_id: int = REQUEST_ID,
        prog: str = "callapi-client",
    ) -> None:
        self._prog = prog
        self._url = url
        self._method = method
        self._params = params
        self._out = out
        self._err = err
        self._quiet = quiet
        self._json_output = json_output
        self._request_id = request_id
        self._opened = False
        self._cmd_id: str | None = None
        self._failed = False
        self._early: list[dict[str, Any]] = []
        self.exit_code: int | None = None
        """C{None} while running, then the process exit code (0, 1 or 2)."""

    @property
    def cmd_id(self) -> str | None:
        """The command's C{cmd_id} from the C{Started} result, else C{None}."""
        return self._cmd_id

    def request(self) -> str:
        """Note that the WebSocket is open; return the request as JSON text.

        @raise ValueError: params that cannot be JSON-encoded (C{NaN}).
        """
        self._opened = True
        return compact(
            {
                "jsonrpc": "2.0",
                "id": self._request_id,
                "method": self._method,
                "params": self._params,
            }
        )

    def received(self, payload: bytes | str) -> int | None:
        """Handle one WebSocket frame (UTF-8 bytes or text) from the server.

        @return: the exit code if this frame decides the outcome (C{Ended}
            -> 0 or 1; JSON-RPC error, unparsable or unexpected frame -> 2),
            else C{None}.
        """
        if self.exit_code is not None:
            return self.exit_code
        text = ""
        try:
            text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
            message = load_json(text)
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            return self._finish(EXIT_ERROR, f"unparsable frame from server ({e}): {_excerpt(text)!r}")
        if not isinstance(message, dict):
            return self._unexpected(message)
        if "method" in message and "id" not in message:
            return self._notification(message)
        if "id" in message and ("result" in message or "error" in message):
            return self._response(message)
        return self._unexpected(message)

    def connection_failed(self, reason: str) -> int:
        """The connection could not be made (bad URL, DNS, refused, TLS...).

        @return: L{EXIT_ERROR} (or the earlier outcome).
        """
        return self._finish(EXIT_ERROR, f"cannot connect to {self._url}: {reason}")

    def handshake_failed(self, reason: str) -> int:
        """The TCP connection was made but the WebSocket opening handshake failed.

        @return: L{EXIT_ERROR} (or the earlier outcome).
        """
        return self._finish(EXIT_ERROR, f"WebSocket handshake with {self._url} failed: {reason}")

    def connection_closed(self, code: int | None = None, reason: str | None = None) -> int:
        """The open WebSocket connection closed (either side, clean or not).

        @param code: the WebSocket close code, if known.
        @param reason: the close reason, if any.
        @return: L{EXIT_ERROR} unless the outcome was already known.
        """
        if self.exit_code is not None:
            return self.exit_code
        waiting = "Ended" if self._cmd_id is not None else "a response"
        detail = ""
        if code is not None or reason:
            detail = f" (code {code}" + (f": {reason}" if reason else "") + ")"
        return self._finish(EXIT_ERROR, f"server closed the connection before {waiting}{detail}")

    def timed_out(self, seconds: float) -> int:
        """The overall timeout of C{seconds} expired.

        @return: L{EXIT_ERROR} unless the outcome was already known.
        """
        if not self._opened:
            doing = f"connecting to {self._url}"
        elif self._cmd_id is None:
            doing = "waiting for the response"
        else:
            doing = "waiting for Ended"
        return self._finish(EXIT_ERROR, f"timed out after {seconds:g} seconds {doing}")

    # -- internals ---------------------------------------------------------

    def _finish(self, code: int, problem: str | None = None) -> int:
        """Record the outcome once; report C{problem} on stderr."""
        if self.exit_code is not None:
            return self.exit_code
        self.exit_code = code
        if problem is not None:
            self._err(f"{self._prog}: {problem}")
        return code

    def _unexpected(self, message: Any) -> int:
        return self._finish(EXIT_ERROR, f"unexpected message from server: {_excerpt(compact(message))}")

    def _response(self, message: dict[str, Any]) -> int | None:
        response_id = message["id"]
        if "error" in message:
            error = message["error"]
            # An id of null answers a request the server could not read: ours.
            ours = response_id is None or _is_our_id(response_id, self._request_id)
            if not ours or not isinstance(error, dict) or self._cmd_id is not None:
                return self._unexpected(message)
            if self._json_output:
                self._out(compact(message))
            line = f"JSON-RPC error {error.get('code')}: {error.get('message')}"
            if "data" in error:
                line += f" (data: {compact(error['data'])})"
            return self._finish(EXIT_ERROR, line)
        result = message["result"]
        if (
            not _is_our_id(response_id, self._request_id)
            or self._cmd_id is not None
            or not isinstance(result, dict)
            # "status" is what some upstream docs call the key
            or result.get("event", result.get("status")) != "Started"
            or not isinstance(result.get("cmd_id"), str)
        ):
            return self._unexpected(message)
        self._cmd_id = result["cmd_id"]
        rest = {k: v for k, v in result.items() if k not in ("event", "status")}
        self._show(message, "Started", rest)
        early, self._early = self._early, []
        for held in early:
            code = self._notification(held)
            if code is not None:
                return code
        return None

    def _notification(self, message: dict[str, Any]) -> int | None:
        params = message.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("event"), str):
            return self._unexpected(message)
        if self._cmd_id is None:
            self._early.append(message)
            return None
        if params.get("cmd_id") != self._cmd_id:
            return None
        event = params["event"]
        data = params.get("data", _MISSING)
        self._show(message, event, data)
        if event == "Error":
            self._failed = True
            if self._quiet:
                if data is _MISSING:
                    shown = "(no data)"
                else:
                    shown = data if isinstance(data, str) else compact(data)
                self._err(f"{self._prog}: Error: {shown}")
        elif event == "Ended":
            return self._finish(EXIT_COMMAND_FAILED if self._failed else EXIT_OK)
        return None

    def _show(self, message: dict[str, Any], event: str, data: Any) -> None:
        if self._quiet:
            return
        if self._json_output:
            self._out(compact(message))
        elif data is _MISSING:
            self._out(event)
        else:
            self._out(f"{event} {compact(data)}")
