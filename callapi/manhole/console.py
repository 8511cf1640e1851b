"""
The interactive console of an SSH session: a terminal session that works
without a pty and refuses C{exec} requests, and a C{ColoredManhole} that
greets with L{BANNER}.  The classes subclass conch, so they are defined on
first use (L{conch_classes}).
"""

from __future__ import annotations

import functools
import types
from typing import Any

from twisted.python.failure import Failure

BANNER = (
    "callapi manhole.  Names: root, services, mi, hub, registry, status, subscriptions(), "
    "commands(), hangups(), reactor.  Ctrl-D leaves.\n"
)

EXEC_REFUSED = (
    b"callapi manhole: this is an interactive Python console; "
    b"connect without a command (ssh -p PORT HOST)\r\n"
)


@functools.cache
def conch_classes() -> types.SimpleNamespace:
    """
    The classes that subclass conch, defined on first use.
    """
    from twisted.conch.interfaces import IConchUser
    from twisted.conch.manhole import ColoredManhole
    from twisted.conch.manhole_ssh import TerminalSession
    from twisted.internet.error import ProcessTerminated

    class ConsoleSession(TerminalSession):  # type: ignore[misc]
        """
        A terminal session that works without a pty request (80x24), follows
        window changes and closes on EOF.  An C{exec} request (C{ssh HOST
        COMMAND}) gets a line on stderr and exit status 1.
        """

        width, height = 80, 24
        _terminal: Any = None
        _closed = False

        def __init__(self, original: Any, clock: Any) -> None:
            super().__init__(original)
            self._clock = clock

        def getPty(self, term: bytes, windowSize: tuple[int, ...], attrs: Any) -> None:
            self._resize(windowSize)

        def _resize(self, windowSize: tuple[int, ...]) -> None:
            rows, columns = windowSize[:2]
            if rows > 0 and columns > 0:  # ssh -tt without a terminal sends 0x0
                self.height, self.width = rows, columns

        def openShell(self, proto: Any) -> None:
            self._terminal = self.transportFactory(
                proto, self.chainedProtocolFactory(), IConchUser(self.original), self.width, self.height
            )

        def execCommand(self, proto: Any, cmd: bytes) -> None:
            def refuse() -> None:
                if not self._closed:
                    proto.errReceived(EXEC_REFUSED)
                    proto.processEnded(Failure(ProcessTerminated(exitCode=1)))

            # After the reply to the exec request has been sent.
            self._clock.callLater(0, refuse)

        def windowChanged(self, newWindowSize: tuple[int, ...]) -> None:
            self._resize(newWindowSize)
            if self._terminal is not None:
                self._terminal.chainedProtocol.terminalProtocol.terminalSize(self.width, self.height)

        def eofReceived(self) -> None:
            if self._terminal is not None:
                self._terminal.chainedProtocol.loseConnection()

        def closed(self) -> None:
            self._closed = True

    class Console(ColoredManhole):  # type: ignore[misc]
        """ColoredManhole that greets with L{BANNER}."""

        _greeted = False

        def terminalSize(self, width: int, height: int) -> None:
            # The first call (right after connecting) clears the screen.
            super().terminalSize(width, height)
            if not self._greeted:
                self._greeted = True
                self.addOutput(BANNER, isAsync=True)

    return types.SimpleNamespace(ConsoleSession=ConsoleSession, Console=Console)
