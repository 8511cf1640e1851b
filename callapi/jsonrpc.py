"""
JSON-RPC 2.0 message parsing, validation and building (no Twisted here).

Follows the JSON-RPC 2.0 specification (https://www.jsonrpc.org/specification)
and docs/protocol.md, "Messages".  Used for the client API; the MI side has its own
encoder in L{callapi.opensips.mi} because OpenSIPS has its own quirks.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from callapi.errors import INVALID_REQUEST, PARSE_ERROR, RPCError, invalid_params

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ascii_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def dumps(message: Any) -> str:
    """
    Serialise one JSON message compactly (no spaces, UTF-8 kept as is).
    A string holding a lone surrogate (a valid JSON escape such as
    C{"\\ud800"} that is not valid UTF-8) makes the whole message
    ASCII-escaped, so it can always be sent.
    """
    text = _encoder.encode(message)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _ascii_encoder.encode(message)
    return text


@attrs.frozen
class Request:
    """
    One valid JSON-RPC request or notification.

    @ivar method: the method name, case-sensitive (e.g. C{"CallHold"}).
    @ivar params: the C{params} object (C{{}} when absent).
    @ivar id: the request id exactly as decoded (str, int, float or None);
        meaningless when C{is_notification}.
    @ivar is_notification: C{True} when the request had no C{id} member: it
        gets no response at all.
    """

    method: str
    params: dict[str, Any]
    id: Any = None
    is_notification: bool = False


@attrs.frozen
class Invalid:
    """
    One element that is not a valid request; answered with C{error}.

    @ivar id: the id to echo (C{None} when it could not be determined).
    @ivar error: the JSON-RPC error to send.
    @ivar notification: the element was a well-formed notification (no
        C{id}) refused only for its params: it gets no response at all.
    """

    id: Any
    error: RPCError
    notification: bool = False


Item = Request | Invalid


@attrs.frozen
class Parsed:
    """
    The result of L{parse}.

    @ivar items: the requests and invalid elements, in order.
    @ivar batch: C{True} when the message was a JSON array: the responses
        must then be sent back as one array (or nothing at all when every
        element was a notification).
    """

    items: list[Item]
    batch: bool


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_detail(error: ValueError) -> str:
    """
    A short reason for a parse error, without Python-specific advice.
    """
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return "message is not valid UTF-8"
    text = str(error)
    if "int_max_str_digits" in text or "digits" in text:
        return "number too long"
    return text.split(";")[0]


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _valid_id(value: Any) -> bool:
    # bool is an int subclass, but not a valid id.
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


#: Deepest nesting of arrays/objects accepted in a message.
MAX_DEPTH = 64
#: Most elements accepted in one batch.
MAX_BATCH = 1000


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse(payload: str | bytes) -> Parsed:
    """
    Parse one WebSocket text message.

    @return: a L{Parsed}.  Never raises: unparsable JSON (or invalid UTF-8,
        NaN/Infinity, absurd nesting) is one L{Invalid} with -32700 and id
        C{None}; an empty batch is one L{Invalid} -32600.
    """
    try:
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8")
        message = json.loads(payload, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        return Parsed(
            [Invalid(None, RPCError(PARSE_ERROR, "Parse error", f"nested deeper than {MAX_DEPTH} levels"))],
            False,
        )
    except ValueError as e:
        return Parsed([Invalid(None, RPCError(PARSE_ERROR, "Parse error", _parse_detail(e)))], False)
    if _too_deep(message):
        return Parsed(
            [Invalid(None, RPCError(PARSE_ERROR, "Parse error", f"nested deeper than {MAX_DEPTH} levels"))],
            False,
        )
    if isinstance(message, list):
        if not message:
            return Parsed(
                [Invalid(None, RPCError(INVALID_REQUEST, "Invalid Request", "empty batch"))],
                False,
            )
        if len(message) > MAX_BATCH:
            return Parsed(
                [
                    Invalid(
                        None,
                        RPCError(
                            INVALID_REQUEST,
                            "Invalid Request",
                            f"batch of {len(message)} requests; at most {MAX_BATCH}",
                        ),
                    )
                ],
                False,
            )
        return Parsed([validate(element) for element in message], True)
    return Parsed([validate(message)], False)


def validate(message: Any) -> Item:
    """
    Check one decoded JSON value against the JSON-RPC 2.0 request rules.

    @return: a L{Request}, or an L{Invalid} with -32600 (not an object,
        C{jsonrpc} not C{"2.0"}, C{method} missing or not a string, bad id
        type) or -32602 (C{params} present but not an object: callapi
        commands take named parameters only).
    """
    if not isinstance(message, dict):
        return Invalid(None, RPCError(INVALID_REQUEST, "Invalid Request", "a request must be a JSON object"))
    has_id = "id" in message
    request_id = message.get("id")
    if has_id and not _valid_id(request_id):
        return Invalid(
            None, RPCError(INVALID_REQUEST, "Invalid Request", "id must be a string, a number or null")
        )
    if message.get("jsonrpc") != "2.0":
        return Invalid(
            request_id, RPCError(INVALID_REQUEST, "Invalid Request", 'jsonrpc must be exactly "2.0"')
        )
    method = message.get("method")
    if not isinstance(method, str):
        return Invalid(request_id, RPCError(INVALID_REQUEST, "Invalid Request", "method must be a string"))
    params = message.get("params", {})
    if not isinstance(params, dict):
        return Invalid(
            request_id, invalid_params("params must be an object (named parameters)"), notification=not has_id
        )
    return Request(method, params, request_id, not has_id)


def result(request_id: Any, value: Any) -> dict[str, Any]:
    """
    @return: a success response C{{"jsonrpc": "2.0", "id": ..., "result": ...}}.
    """
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: Any, err: RPCError) -> dict[str, Any]:
    """
    @return: an error response C{{"jsonrpc": "2.0", "id": ..., "error": {...}}}.
    """
    return {"jsonrpc": "2.0", "id": request_id, "error": err.to_json()}


def notification(method: str, cmd_id: str, event: str, data: Any = None) -> dict[str, Any]:
    """
    A command progress notification (docs/protocol.md, "Messages"):
    C{{"jsonrpc": "2.0", "method": <command>, "params": {"cmd_id", "event"[, "data"]}}}.

    @param data: a JSON object or string; C{None} omits the member (always
        so for C{Ended}).
    """
    params: dict[str, Any] = {"cmd_id": cmd_id, "event": event}
    if data is not None:
        params["data"] = data
    return {"jsonrpc": "2.0", "method": method, "params": params}
