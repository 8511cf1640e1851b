"""
Shared pytest fixtures.

pytest-twisted has no C{reactor} fixture (docs/testing.md, "Pitfalls"); the one
below returns the reactor pytest-twisted runs, for end-to-end tests.  Unit
tests use a L{Clock} instead and never touch it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from callapi.testing.daemon import DaemonHarness, start_daemon


@pytest.fixture
def reactor() -> Any:
    """
    The global reactor (the one pytest-twisted runs), for end-to-end tests.
    """
    from twisted.internet import reactor as global_reactor

    return global_reactor


@pytest.fixture
def clock() -> Clock:
    """
    A fresh fake clock.
    """
    return Clock()


@pytest.fixture
def daemon(reactor: Any) -> Iterator[DaemonHarness]:
    """
    A daemon + emulator pair on loopback (L{callapi.testing.daemon}); after
    the test everything is stopped and nothing may be left running,
    registered or pending.
    """
    started = pytest_twisted.blockon(Deferred.fromCoroutine(start_daemon(reactor)))
    yield started
    pytest_twisted.blockon(Deferred.fromCoroutine(started.stop()))
    started.assert_nothing_left()
