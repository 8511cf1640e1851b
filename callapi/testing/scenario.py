"""
The harness of the command (scenario) unit tests: one command run against
a L{FakeMIClient}, the real L{EventHub} (it has no I/O), a L{Clock} and a
L{RecordingSink}, and the one end-of-command check every test ends with.

    env = ScenarioHarness.start(CallHold, {"callid": "6c93c431e29d3500"})
    assert env.requests() == [("call_hold", {"callid": "6c93c431e29d3500"})]
    env.play(hold_started(CALLID, "caller"), MIReply("call_hold", "OK"), ...)
    assert env.events() == [("CallHolding", None), ...]
    env.assert_ended_clean()

The harness only uses what every command offers (L{Command} C{run},
C{method}, C{cmd_id}, C{done}, C{outstanding}, C{started_at} and the
static C{check}); test modules subclass it for their own vocabulary of
steps.  Events come from L{callapi.testing.evi}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

import attrs
from twisted.internet.task import Clock

from callapi.errors import MIError
from callapi.interfaces import IDialogRegistry, IProxyStatus
from callapi.opensips.events import EventHub
from callapi.opensips.names import MINames
from callapi.scenarios import Command, Context, Settings
from callapi.testing.evi import Event
from callapi.testing.fakes import FakeMIClient, RecordingSink

C = TypeVar("C", bound=Command)

#: The notification that ends every command, as C{(event, data)}.
ENDED = ("Ended", None)


@attrs.frozen
class MIReply:
    """
    A step of L{ScenarioHarness.play}: OpenSIPS answers the oldest pending
    MI request of C{method} with C{result} (e.g. C{"OK"}, C{"Accepted"}).
    """

    method: str
    result: Any


@attrs.frozen
class MIFailure:
    """
    A step of L{ScenarioHarness.play}: OpenSIPS answers the oldest pending
    MI request of C{method} with the error C{code} C{message} (C{data}),
    i.e. an L{MIError}.
    """

    method: str
    code: int
    message: str
    data: Any = None


#: What L{ScenarioHarness.play} accepts.
Step = Event | MIReply | MIFailure


@attrs.define
class ScenarioHarness(Generic[C]):
    """
    One started command and the fakes around it.

    @ivar command: the command, already C{run()}.
    @ivar cmd_id: the C{cmd_id} it was given.
    @ivar mi: every MI request it made; answer them with L{play} or
        C{mi.reply}/C{mi.error}/C{mi.time_out}.
    @ivar hub: the real event hub; feed it with L{dispatch} or L{play}.
    @ivar clock: the command's clock (seconds).
    @ivar sink: every notification it sent.
    """

    command: C
    cmd_id: str
    mi: FakeMIClient
    hub: EventHub
    clock: Clock
    sink: RecordingSink

    @classmethod
    def start(
        cls,
        command_class: type[C],
        params: dict[str, Any],
        cmd_id: str = "c1",
        *,
        settings: Settings | None = None,
        names: MINames | None = None,
        check: bool = True,
        prepare: Callable[[C], None] | None = None,
        registry: IDialogRegistry | None = None,
        status: IProxyStatus | None = None,
    ) -> Self:
        """
        Build the context, the command (its params through its C{check}
        first, as the daemon does, unless C{check} is false) and run it.

        @param prepare: called with the command before it runs (e.g. to give
            a CallStart the Call-ID of a trace).
        @param registry: the context's registry (e.g. a
            L{callapi.testing.fakes.FakeDialogRegistry}); default: the
            stand-in that knows no dialog.
        @param status: the context's proxy status; default: always reachable.
        @raise callapi.errors.RPCError: C{check} refused C{params}.
        """
        mi, hub, clock, sink = FakeMIClient(), EventHub(), Clock(), RecordingSink()
        ctx = Context(
            mi=mi, events=hub, clock=clock, names=names or MINames(), settings=settings or Settings()
        )
        if registry is not None or status is not None:
            ctx = Context(
                mi=mi,
                events=hub,
                clock=clock,
                names=ctx.names,
                settings=ctx.settings,
                registry=registry or ctx.registry,
                status=status or ctx.status,
            )
        if check:
            params = command_class.check(params)  # type: ignore[attr-defined]
        command = command_class(ctx, cmd_id, params, sink)
        if prepare is not None:
            prepare(command)
        command.run()
        return cls(command, cmd_id, mi, hub, clock, sink)

    @property
    def ctx(self) -> Context:
        """
        The command's context (names, settings, the fakes).
        """
        return self.command.ctx

    # driving

    def dispatch(self, *events: Event) -> None:
        """
        Deliver EVI events (L{callapi.testing.evi}) to the hub, in order.
        """
        for name, params in events:
            self.hub.dispatch(name, params)

    def play(self, *steps: Step) -> None:
        """
        Feed events and MI answers (L{MIReply}, L{MIFailure}), in order.
        """
        for step in steps:
            if isinstance(step, MIReply):
                self.mi.reply(step.method, step.result)
            elif isinstance(step, MIFailure):
                self.mi.error(step.method, MIError(step.method, step.code, step.message, step.data))
            else:
                self.dispatch(step)

    def replay(self, timeline: list[tuple[float, Step]]) -> None:
        """
        Play C{(ms after the command started, step)} pairs on the clock, as
        a trace's C{t_ms} time line (times must not go backwards).
        """
        for ms, step in timeline:
            delay = self.command.started_at + ms / 1000.0 - self.clock.seconds()
            assert delay >= 0, f"step at {ms} ms is in the past"
            self.clock.advance(delay)
            self.play(step)

    def turn(self) -> None:
        """
        One reactor turn: the C{callLater(0, ...)} calls due now run.
        """
        self.clock.advance(0)

    # what happened

    def events(self) -> list[tuple[str, Any]]:
        """
        The notifications sent so far as C{(event, data)}, in order.
        """
        return self.sink.events()

    def requests(self) -> list[tuple[str, dict[str, Any] | None]]:
        """
        The MI requests made so far as C{(method, params)}, in order.
        """
        return [(r.method, r.params) for r in self.mi.requests]

    def assert_ended_clean(self) -> None:
        """
        L{assert_ended_clean} of this harness.
        """
        assert_ended_clean(self)


def assert_ended_clean(env: ScenarioHarness[Any]) -> None:
    """
    The end-of-command check: the command sent C{Ended} (no data) exactly
    once and last, at most one C{Error}, only notifications of its own
    method and C{cmd_id}; it is done and owns nothing any more (no event
    registration in the hub, no timer on the clock, no pending MI request).

    @raise AssertionError: naming what was left or sent wrong.
    """
    events = env.events()
    names = [event for event, _ in events]
    assert names.count("Ended") == 1 and names[-1] == "Ended", events
    assert events.count(ENDED) == 1 and events[-1] == ENDED, events
    assert names.count("Error") <= 1, events
    assert {(m, c) for m, c, _, _ in env.sink.notifications} == {(env.command.method, env.cmd_id)}, (
        env.sink.notifications
    )
    assert env.command.done
    assert env.command.outstanding == {"subscriptions": 0, "timers": 0, "requests": 0}, (
        env.command.outstanding
    )
    assert env.hub.registrations == 0, env.hub.registrations
    assert env.clock.getDelayedCalls() == [], env.clock.getDelayedCalls()
    assert env.mi.pending == {}, env.mi.pending
