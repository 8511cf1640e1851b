"""
Per-client JSON-RPC sessions: request dispatch, cmd_id handling, and the
ordering guarantee of docs/protocol.md, "Messages" (the C{Started} result of a
command is written before any notification of it).  No Autobahn here: the
WebSocket shell (L{callapi.ws}) hands text in and takes text out.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from callapi import jsonrpc, validation
from callapi.errors import (
    DUPLICATE_CMD_ID,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    OPENSIPS_UNREACHABLE,
    SHUTTING_DOWN,
    RPCError,
)
from callapi.interfaces import INotificationSink
from callapi.logging import logger
from callapi.scenarios import COMMANDS, Command, Context

#: JSON-RPC server error: the session already runs too many commands.
TOO_MANY_COMMANDS = -32004


class CommandRunner:
    """
    Daemon-wide: creates commands from validated requests and tracks every
    running command of every session (for the manhole and for shutdown).

    @ivar running: C{{(session number, cmd_id): Command}}.
    """

    _log = logger()

    def __init__(
        self, ctx: Context, commands: dict[str, type[Command]] | None = None, max_per_session: int = 1000
    ) -> None:
        self.ctx = ctx
        self.commands = COMMANDS if commands is None else commands
        self.max_per_session = max_per_session
        self.running: dict[tuple[int, str], Command] = {}
        self.accepting = True
        self._session_numbers = itertools.count(1)
        self.sessions: dict[int, Session] = {}

    def open(self, send: Callable[[str], None], peer: str = "") -> Session:
        """
        Create the session of a newly connected client.

        @param send: writes one text message to that client.
        """
        session = Session(self, next(self._session_numbers), send, peer)
        self.sessions[session.number] = session
        return session

    def closed(self, session: Session) -> None:
        """
        The client went away: abort its commands (the calls are not touched).
        """
        session.close()
        self.sessions.pop(session.number, None)

    def stop(self) -> None:
        """
        Refuse new commands and abort the running ones (daemon shutdown).
        """
        self.accepting = False
        for command in list(self.running.values()):
            command.shutdown()


@implementer(INotificationSink)
class Session:
    """
    One client connection.

    @ivar running: cmd_id -> L{Command} of this client's running commands.
    """

    _log = logger()

    def __init__(
        self, runner: CommandRunner, number: int, send: Callable[[str], None], peer: str = ""
    ) -> None:
        self._runner = runner
        self.number = number
        self._send = send
        self.peer = peer
        self.running: dict[str, Command] = {}
        self.is_open = True

    def received(self, payload: str | bytes) -> None:
        """
        Handle one text message from the client: a request, a notification
        or a batch.  Responses are written before the commands they start
        emit anything.  Never raises.
        """
        parsed = jsonrpc.parse(payload)
        responses: list[dict[str, Any]] = []
        to_start: list[Command] = []
        for item in parsed.items:
            if isinstance(item, jsonrpc.Invalid):
                if not item.notification:
                    responses.append(jsonrpc.error(item.id, item.error))
                continue
            try:
                command = self._create(item)
            except RPCError as e:
                if not item.is_notification:
                    responses.append(jsonrpc.error(item.id, e))
                continue
            except Exception:
                self._log.failure("creating {method} failed", method=item.method)
                if not item.is_notification:
                    responses.append(jsonrpc.error(item.id, RPCError(INTERNAL_ERROR, "Internal error")))
                continue
            to_start.append(command)
            if not item.is_notification:
                responses.append(
                    jsonrpc.result(
                        item.id, {"cmd_id": command.cmd_id, "event": "Started", **command.result_extra()}
                    )
                )
        if parsed.batch:
            if responses:
                self._write(responses)
        elif responses:
            self._write(responses[0])
        for command in to_start:
            command.run()

    def _create(self, request: jsonrpc.Request) -> Command:
        if not self._runner.accepting:
            raise RPCError(SHUTTING_DOWN, "callapi is shutting down")
        cls = self._runner.commands.get(request.method)
        if cls is None:
            raise RPCError(METHOD_NOT_FOUND, "Method not found", request.method)
        params = dict(request.params)
        generated = "cmd_id" not in params
        if not generated:
            cmd_id = validation.cmd_id(params.pop("cmd_id"))
            if cmd_id in self.running:
                raise RPCError(DUPLICATE_CMD_ID, "cmd_id already running", cmd_id)
        else:
            cmd_id = str(uuid.uuid4())
        if len(self.running) >= self._runner.max_per_session:
            raise RPCError(
                TOO_MANY_COMMANDS,
                "too many running commands",
                f"limit {self._runner.max_per_session} per connection",
            )
        checked = cls.check(params)
        status = self._runner.ctx.status
        if cls.needs_opensips and not status.reachable:
            raise RPCError(OPENSIPS_UNREACHABLE, "OpenSIPS unreachable", status.describe())
        cls.check_context(checked, self._runner.ctx)
        command = cls(self._runner.ctx, cmd_id, checked, self, cmd_id_generated=generated)
        self.running[cmd_id] = command
        key = (self.number, cmd_id)
        self._runner.running[key] = command

        def forget(_: Any) -> None:
            if self.running.get(cmd_id) is command:
                del self.running[cmd_id]
            if self._runner.running.get(key) is command:
                del self._runner.running[key]

        command.finished.addCallback(forget)
        self._log.debug(
            "client {peer} started {method} {cmd_id}", peer=self.peer, method=request.method, cmd_id=cmd_id
        )
        return command

    # INotificationSink

    def notify(
        self, method: str, cmd_id: str, event: str, data: Any = None, extra: dict[str, Any] | None = None
    ) -> None:
        """
        See L{INotificationSink.notify}; C{extra} members are added to the
        notification's C{params} after C{cmd_id}, C{event} and C{data}.
        """
        message = jsonrpc.notification(method, cmd_id, event, data)
        if extra:
            message["params"].update({k: v for k, v in extra.items() if k not in message["params"]})
        self._write(message)

    def _write(self, message: Any) -> None:
        if not self.is_open:
            return
        try:
            self._send(jsonrpc.dumps(message))
        except Exception:
            self._log.failure("cannot write to client {peer}", peer=self.peer)

    def close(self) -> None:
        """
        Stop writing and abort this client's running commands.
        """
        self.is_open = False
        for command in list(self.running.values()):
            command.abort("client disconnected")
