"""
C{docs/scenarios.md} is the output of L{callapi.scenarios.docs}: the
transition tables in the code and the document never differ.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import pytest

from callapi.scenarios.docs import FLOWS, render
from callapi.scenarios.machine import Flow, InvalidTransition, Machine

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"


def test_doc_is_generated_from_the_code() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/scenarios.md is stale: python -m callapi.scenarios.docs > docs/scenarios.md"
    )


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_live_phase_handles_abort(flow: Flow[Any]) -> None:
    for phase in flow.phases:
        assert ((phase, "abort") in flow.table) == (phase is not flow.terminal)


class _Phase(enum.Enum):
    A = 1
    B = 2
    DONE = 3


class _Owner:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def go(self, value: str) -> None:
        self.seen.append(value)

    def wrong(self) -> _Phase:
        return _Phase.DONE

    def stop(self, why: str) -> None:
        self.seen.append("abort " + why)


def _flow() -> Flow[_Phase]:
    return Flow(
        "test",
        _Phase,
        _Phase.A,
        _Phase.DONE,
        [
            (_Phase.A, "go", _Phase.B, "go"),
            (_Phase.B, "go", (_Phase.B, _Phase.DONE), "go"),
            (_Phase.B, "wrong", _Phase.B, "wrong"),
        ],
        abort="stop",
    )


def phase_of(machine: Machine[_Phase]) -> _Phase:
    """
    C{machine.phase}, read through a call: mypy would keep C{machine.phase}
    narrowed to the phase an earlier C{assert} saw, across C{feed}.
    """
    return machine.phase


def test_machine_follows_the_table() -> None:
    owner = _Owner()
    machine = Machine(_flow(), owner)
    machine.feed("wrong")  # not listed in A: ignored
    assert phase_of(machine) is _Phase.A and owner.seen == []
    machine.feed("go", "1")
    assert phase_of(machine) is _Phase.B
    machine.feed("go", "2")  # None: stays, B is listed
    assert phase_of(machine) is _Phase.B and owner.seen == ["1", "2"]
    with pytest.raises(InvalidTransition):
        machine.feed("wrong")
    machine.feed("abort", "x")
    assert machine.done and owner.seen == ["1", "2", "abort x"]
    machine.feed("go", "3")  # terminal: absorbed
    assert owner.seen == ["1", "2", "abort x"]


def test_flow_checks_its_owner() -> None:
    class Missing:
        pass

    with pytest.raises(TypeError):
        _flow().check(Missing)
    with pytest.raises(ValueError):
        Flow(
            "dup",
            _Phase,
            _Phase.A,
            _Phase.DONE,
            [(_Phase.A, "go", _Phase.B, "go"), (_Phase.A, "go", _Phase.B, "go")],
        )
