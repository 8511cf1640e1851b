"""
What C{callapi-client} and C{callapi-cmd} share on their command lines:
the exit codes, the argument parser that raises L{UsageError}, the C{key=value}
/ C{key:=JSON} parameters and the line printer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
"""The command ended without an C{Error} notification."""
EXIT_COMMAND_FAILED = 1
"""The command ended after an C{Error} notification."""
EXIT_ERROR = 2
"""Usage, connection, protocol or JSON-RPC error, early close, or timeout."""


class UsageError(Exception):
    """A bad command line; C{str(error)} is the one-line explanation."""


def _reject_constant(name: str) -> Any:
    """C{json.loads} hook refusing C{NaN}/C{Infinity}, which are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> Any:
    """Parse strict JSON text; raise C{ValueError} on anything else."""
    return json.loads(text, parse_constant=_reject_constant)


def load_json(text: str) -> Any:
    """Parse strict JSON text.

    @raise ValueError: anything but strict JSON (C{NaN}/C{Infinity} too).
    """
    return json.loads(text, parse_constant=_reject_constant)


def parse_pair(arg: str) -> tuple[str, Any]:
    """Parse one httpie-style parameter.

    C{key=value} gives the string C{value}; C{key:=JSON} gives the decoded
    JSON value (any type).  The first C{=} separates key and value, so values
    may contain C{=} and C{:=}.

    @return: C{(key, value)}.
    @raise UsageError: no C{=}, an empty key, or a C{:=} value that is not
        strict JSON (C{NaN}/C{Infinity} are refused).
    """
    eq = arg.find("=")
    if eq < 0:
        raise UsageError(f"bad parameter {arg!r}: expected key=value or key:=JSON")
    typed = eq > 0 and arg[eq - 1] == ":"
    key = arg[: eq - 1] if typed else arg[:eq]
    raw = arg[eq + 1 :]
    if not key:
        raise UsageError(f"bad parameter {arg!r}: empty key")
    if not typed:
        return key, raw
    try:
        return key, load_json(raw)
    except ValueError as e:
        raise UsageError(f"bad parameter {arg!r}: value is not JSON ({e})") from None


def parse_params(pairs: Sequence[str], cmd_id: str | None = None) -> dict[str, Any]:
    """Build the request's C{params} object from C{key=value}/C{key:=JSON} pairs.

    @param cmd_id: if not C{None}, added as the C{cmd_id} parameter.
    @return: a new dict, in command-line order (C{cmd_id} last).
    @raise UsageError: a malformed pair (see L{parse_pair}), a key given
        twice, or C{cmd_id} given both as a pair and as C{cmd_id}.
    """
    params: dict[str, Any] = {}
    for arg in pairs:
        key, value = parse_pair(arg)
        if key in params:
            raise UsageError(f"parameter {key!r} given twice")
        params[key] = value
    if cmd_id is not None:
        if "cmd_id" in params:
            raise UsageError("cmd_id given both as --cmd-id and as a parameter")
        params["cmd_id"] = cmd_id
    return params


class ArgumentParser(argparse.ArgumentParser):
    """An C{ArgumentParser} raising L{UsageError} instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def printer(stream: TextIO) -> Callable[[str], None]:
    """A callable writing one line to C{stream} and flushing it."""

    def write(line: str) -> None:
        print(line, file=stream, flush=True)

    return write


def run_program(
    prog: str,
    argv: Sequence[str] | None,
    parse_args: Callable[[Sequence[str]], Any],
    run: Callable[[Any, Any], Awaitable[int]],
    prepare: Callable[[Any], None] | None = None,
) -> NoReturn:
    """
    The body of a console entry point: parse the arguments, run the
    program's coroutine under L{twisted.internet.task.react}, exit with its
    code.

    @param prog: the program name for the one-line usage error.
    @param argv: arguments without the program name (default C{sys.argv[1:]}).
    @param parse_args: arguments -> options; raises L{UsageError}.
    @param run: C{(reactor, options)} -> the exit code.
    @param prepare: called with the options before the reactor runs (e.g.
        to start logging), or C{None}.
    @raise SystemExit: always, with the exit code (2 and one stderr line
        for a usage error; 0 for C{--help}).
    """
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{prog}: error: {e} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None

    from twisted.internet.task import react

    if prepare is not None:
        prepare(options)

    async def _main(reactor: Any) -> None:
        raise SystemExit(await run(reactor, options))

    react(_main)
