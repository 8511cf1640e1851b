"""
callapi's logging: L{logger} gives the C{twisted.logger} L{Logger}s that
callapi code uses, filtered by C{--log-level} (L{set_level}; a call below
the level returns before building an event), and L{LogFileService} is the
C{--log-file} / C{log.file_path} option: an extra log file observer with a
level filter, added while the daemon runs (twistd's own log is unchanged).
"""

from __future__ import annotations

from typing import IO, Any, cast

from constantly import NamedConstant
from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
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


class _Levels(LogLevelFilterPredicate):
    """
    A L{LogLevelFilterPredicate} that also answers, per namespace, which
    levels are below its minimum (L{muted}): remembered, so that a log call
    below the level costs one dictionary lookup and one set lookup.  The
    memory is emptied whenever a level changes.
    """

    def __init__(self, defaultLogLevel: NamedConstant = LogLevel.info) -> None:
        self._muted: dict[str, frozenset[NamedConstant]] = {}
        super().__init__(defaultLogLevel)

    def muted(self, namespace: str) -> frozenset[NamedConstant]:
        """
        The levels whose events from C{namespace} are dropped.
        """
        try:
            return self._muted[namespace]
        except KeyError:
            minimum = self.logLevelForNamespace(namespace)
            muted = self._muted[namespace] = frozenset(
                level for level in LogLevel.iterconstants() if level < minimum
            )
            return muted

    def setLogLevelForNamespace(self, namespace: str, level: NamedConstant) -> None:
        super().setLogLevelForNamespace(namespace, level)
        self._muted.clear()

    def clearLogLevels(self) -> None:
        super().clearLogLevels()
        self._muted.clear()


#: The minimum level of callapi's own log events (set from --log-level).
levels = _Levels(defaultLogLevel=LogLevel.info)


def _forward(event: dict[str, Any]) -> None:
    globalLogPublisher(event)


#: Where callapi's loggers write: the global log, filtered by L{levels}.
observer = FilteringLogObserver(cast(ILogObserver, _forward), [levels])


class _Logger(Logger):
    """
    A L{Logger} that drops an event below its namespace's level in
    L{levels} before building it (no event dict, no timestamp): a
    C{debug} call at the default level C{info} is nearly free.  Events at
    or above the level go on to L{observer}, which filters them again (so
    an observer-level change made directly on L{levels} still applies).
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level in levels.muted(self.namespace):
            return
        super().emit(level, format, **kwargs)

    def debug(self, format: str | None = None, **kwargs: object) -> None:
        # The one level that is usually off: skip even the call to emit.
        if LogLevel.debug in levels.muted(self.namespace):
            return
        super().emit(LogLevel.debug, format, **kwargs)


def logger(namespace: str | None = None) -> Logger:
    """
    A L{Logger} for a callapi class attribute (C{_log = logger()}): its
    events go to the global log when at or above the configured level
    (L{set_level}, i.e. C{--log-level}); below it, a call returns at once.

    @param namespace: needed only outside a class attribute (a class
        attribute takes the class's name).
    """
    return _Logger(namespace=namespace or "callapi", observer=observer)


def set_level(level: str) -> None:
    """
    Set the minimum level of callapi's log events: one of C{debug},
    C{info}, C{warn}, C{error}, C{critical}.

    @raise twisted.logger.InvalidLogLevelError: an unknown name.
    """
    # "" (like None) sets the level of the root namespace, i.e. the default.
    levels.setLogLevelForNamespace("", LogLevel.levelWithName(level))
