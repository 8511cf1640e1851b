"""
Shared pytest fixtures.

pytest-twisted has no C{reactor} fixture (HOUSE-STYLE, "Pitfalls"); the one
below returns the reactor pytest-twisted runs.  Unit tests use a L{Clock}
instead and never touch it.
"""

from __future__ import annotations

import json
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes) -> Any:
    """
    Decode C{text} as RFC 8259 JSON: NaN/Infinity are refused, text must be
    encodable as UTF-8 (no lone surrogates).  Raises C{ValueError} otherwise.
    """
    if isinstance(text, str):
        text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on lone surrogates
    return json.loads(text, parse_constant=_no_constant)


@pytest.fixture
def decode() -> Any:
    """
    The L{strict_json} decoder, as a fixture (test modules do not import
    conftest).
    """
    return strict_json
