"""
The C{log.file_path} / C{log.level} options: an extra log file observer with
a level filter, added while the daemon runs (twistd's own log is unchanged).
"""

from __future__ import annotations

from typing import IO, Any, cast

from twisted.application.service import Service
from twisted.logger import (
    Logger,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    textFileLogObserver,
)


class LogFileService(Service):
    """
    Writes log events at C{level} and above to C{path} (appending).

    @param level: one of C{debug}, C{info}, C{warn}, C{error}, C{critical}.
    """

    def __init__(self, path: str, level: str = "info", publisher: Any = None) -> None:
        self.path = path
        self.level = LogLevel.levelWithName(level)
        self._publisher = publisher if publisher is not None else globalLogPublisher
        self._file: IO[str] | None = None
        self._observer: Any = None

    def startService(self) -> None:
        super().startService()
        self._file = open(self.path, "a", encoding="utf-8")
        predicate = LogLevelFilterPredicate(defaultLogLevel=self.level)
        self._observer = FilteringLogObserver(textFileLogObserver(self._file), [predicate])
        self._publisher.addObserver(self._observer)

    def stopService(self) -> None:
        super().stopService()
        if self._observer is not None:
            self._publisher.removeObserver(self._observer)
            self._observer = None
        if self._file is not None:
            self._file.close()
            self._file = None


#: The minimum level of callapi's own log events (set from --log-level).
levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


def _forward(event: dict[str, Any]) -> None:
    globalLogPublisher(event)


#: Where callapi's loggers write: the global log, filtered by L{levels}.
observer = FilteringLogObserver(cast(ILogObserver, _forward), [levels])


def logger(namespace: str | None = None) -> Logger:
    """
    A L{Logger} for a callapi class attribute (C{_log = logger()}): its
    events go to the global log when at or above the configured level.

    @param namespace: needed only outside a class attribute (a class
        attribute takes the class's name).
    """
    return Logger(namespace=namespace or "callapi", observer=observer)


def set_level(level: str) -> None:
    """
    Set the minimum level of callapi's log events: one of C{debug},
    C{info}, C{warn}, C{error}, C{critical}.

    @raise twisted.constants.NamedConstant lookup error (ValueError): unknown name.
    """
    # "" (like None) sets the level of the root namespace, i.e. the default.
    levels.setLogLevelForNamespace("", LogLevel.levelWithName(level))
