"""
Shared pytest fixtures.

pytest-twisted has no C{reactor} fixture (HOUSE-STYLE, "Pitfalls"); the one
below returns the reactor pytest-twisted runs, for end-to-end tests.  Unit
tests use a L{Clock} instead and never touch it.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock


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
