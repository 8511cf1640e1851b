"""
A small enum-driven state machine: each call flow declares its phases (an
C{enum.Enum}) and a transition table C{(phase, input) -> (possible next
phases, action)}; that table is the flow's documentation
(C{docs/scenarios.md} is generated from it, L{callapi.scenarios.docs}).

Inputs are method names with semantic arguments (C{answered()},
C{failed(reason)}), never raw wire dicts.  Feeding an input costs one
dictionary lookup and one method call.  An input the current phase does
not list is logged (debug) and ignored; the terminal phase absorbs every
input silently.  Every non-terminal phase accepts C{abort}.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Generic, TypeVar, Union

import attrs

from callapi.logging import logger

P = TypeVar("P", bound=enum.Enum)

_log = logger("callapi.scenarios.machine")


class InvalidTransition(Exception):
    """
    An action chose a next phase its table row does not list (a bug).
    """


@attrs.frozen
class Transition(Generic[P]):
    """
    One row of a transition table.

    @ivar targets: the phases the flow may be in after the action; the
        action returns one of them (C{None}: the current phase if listed,
        else the first).
    @ivar action: the name of the owner's method that handles the input.
    """

    targets: tuple[P, ...]
    action: str


Phases = Union[P, tuple[P, ...]]  # noqa: UP007 (mypy needs Union for a generic alias)


class Flow(Generic[P]):
    """
    The phases and transition table of one call flow.

    @ivar name: the flow's name (a command's method or a component's).
    @ivar initial: the phase a new L{Machine} starts in.
    @ivar terminal: the phase that absorbs every input.
    @ivar table: C{(phase, input name) -> Transition}.
    """

    def __init__(
        self,
        name: str,
        phases: type[P],
        initial: P,
        terminal: P,
        rows: Iterable[tuple[Phases[P], str, Phases[P], str]],
        abort: str | None = "abort",
    ) -> None:
        """
        @param rows: C{(from phase(s), input, to phase(s), action)}.
        @param abort: the action every non-terminal phase runs on the
            C{abort} input (C{None}: the flow has no abort of its own).
        """
        self.name = name
        self.phases = phases
        self.initial = initial
        self.terminal = terminal
        self.rows: list[tuple[tuple[P, ...], str, tuple[P, ...], str]] = []
        self.table: dict[tuple[P, str], Transition[P]] = {}
        for sources, input_name, targets, action in rows:
            self._add(sources, input_name, targets, action)
        if abort is not None:
            self._add(tuple(p for p in phases if p is not terminal), "abort", terminal, abort)

    def _add(self, sources: Phases[P], input_name: str, targets: Phases[P], action: str) -> None:
        froms = sources if isinstance(sources, tuple) else (sources,)
        tos = targets if isinstance(targets, tuple) else (targets,)
        self.rows.append((froms, input_name, tos, action))
        transition = Transition(tos, action)
        for phase in froms:
            if (phase, input_name) in self.table:
                raise ValueError(f"{self.name}: {phase.name} + {input_name} listed twice")
            if phase is self.terminal:
                raise ValueError(f"{self.name}: the terminal phase takes no input")
            self.table[phase, input_name] = transition

    def check(self, owner: type) -> None:
        """
        @raise TypeError: an action is not a method of C{owner}.
        @raise ValueError: a phase is unreachable.
        """
        for _, _, _, action in self.rows:
            if not callable(getattr(owner, action, None)):
                raise TypeError(f"{self.name}: {owner.__name__} has no action {action}")
        reachable = {self.initial}
        for _, _, targets, _ in self.rows:
            reachable.update(targets)
        for phase in self.phases:
            if phase not in reachable:
                raise ValueError(f"{self.name}: {phase.name} is unreachable")

    def markdown(self) -> str:
        """
        @return: the transition table as a markdown table (one row per
            table row, phases by name).
        """
        lines = ["| phase | input | next phase | action |", "|---|---|---|---|"]
        for froms, input_name, tos, action in self.rows:
            lines.append(
                f"| {' / '.join(p.name for p in froms)} | `{input_name}` "
                f"| {' / '.join(p.name for p in tos)} | `{action}` |"
            )
        return "\n".join(lines)


class Machine(Generic[P]):
    """
    One running flow: its current L{phase} and L{feed}.

    @ivar phase: the current phase.
    """

    __slots__ = ("_owner", "_table", "flow", "phase")

    def __init__(self, flow: Flow[P], owner: Any) -> None:
        """
        @param owner: the object whose methods are the table's actions.
        """
        self.flow = flow
        self.phase: P = flow.initial
        self._owner = owner
        self._table = flow.table

    def feed(self, input_name: str, *args: Any) -> None:
        """
        Deliver one input: run the action its row names, then enter the
        phase the action returned (C{None}: stay, when the row lists the
        current phase among its targets, else the row's first target).  An
        action that ended the flow (L{terminate}) has the last word.

        @raise InvalidTransition: the action returned a phase not listed.
        """
        phase = self.phase
        transition = self._table.get((phase, input_name))
        if transition is None:
            if phase is not self.flow.terminal:
                _log.debug(
                    "{flow}: input {input} ignored in phase {phase}",
                    flow=self.flow.name,
                    input=input_name,
                    phase=phase.name,
                )
            return
        target = getattr(self._owner, transition.action)(*args)
        if self.phase is not phase:
            return  # terminated (or moved on) by the action itself
        if target is None:
            target = phase if phase in transition.targets else transition.targets[0]
        elif target not in transition.targets:
            raise InvalidTransition(
                f"{self.flow.name}: {phase.name} + {input_name} -> {target.name} is not in the table"
            )
        self.phase = target

    def terminate(self) -> None:
        """
        Enter the terminal phase (the flow is over, whatever it was doing).
        """
        self.phase = self.flow.terminal

    @property
    def done(self) -> bool:
        """
        C{True} once in the terminal phase.
        """
        return self.phase is self.flow.terminal
