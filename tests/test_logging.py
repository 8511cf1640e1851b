"""
callapi.logging: C{logger()} loggers obey C{--log-level} (L{set_level}),
and a call below the level is dropped before an event is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, InvalidLogLevelError, LogLevel, globalLogPublisher

from callapi import logging as callapi_logging
from callapi.logging import levels, logger, set_level


class Chatty:
    _log = logger()

    def speak(self) -> None:
        self._log.debug("debug {n}", n=1)
        self._log.info("info {n}", n=2)
        self._log.warn("warn {n}", n=3)
        self._log.error("error {n}", n=4)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith(("tests.", "callapi.test")):
            seen.append(event)

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observer)
        levels.clearLogLevels()
        set_level("info")


def test_default_level_is_info(events: list[dict[str, Any]]) -> None:
    Chatty().speak()
    assert [e["n"] for e in events] == [2, 3, 4]
    assert events[0]["log_namespace"] == f"{__name__}.Chatty"


@pytest.mark.parametrize(
    "level, expected",
    [("debug", [1, 2, 3, 4]), ("info", [2, 3, 4]), ("warn", [3, 4]), ("error", [4]), ("critical", [])],
)
def test_set_level_filters(events: list[dict[str, Any]], level: str, expected: list[int]) -> None:
    set_level(level)
    Chatty().speak()
    assert [e["n"] for e in events] == expected


def test_named_logger_is_filtered(events: list[dict[str, Any]]) -> None:
    log = logger("callapi.test.named")
    log.info("hidden {n}", n=1)
    set_level("warn")
    log.info("hidden {n}", n=2)
    log.warn("shown {n}", n=3)
    set_level("debug")
    log.debug("shown {n}", n=4)
    assert [e["n"] for e in events] == [1, 3, 4]


def test_namespace_level_set_on_levels_applies(events: list[dict[str, Any]]) -> None:
    levels.setLogLevelForNamespace(f"{__name__}.Chatty", LogLevel.error)
    Chatty().speak()
    logger("callapi.test.other").info("other {n}", n=5)
    assert [e["n"] for e in events] == [4, 5]


def test_below_level_builds_no_event(monkeypatch: pytest.MonkeyPatch, events: list[dict[str, Any]]) -> None:
    built: list[str] = []
    monkeypatch.setattr(
        callapi_logging.Logger, "emit", lambda self, level, format=None, **kw: built.append(level.name)
    )
    log = logger("callapi.test.cheap")
    log.debug("x")
    log.info("y")
    assert built == ["info"]


def test_bad_level_name() -> None:
    with pytest.raises(InvalidLogLevelError):
        set_level("loud")
