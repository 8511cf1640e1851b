"""
Chained scheduling for the OpenSIPS emulator.

Every multi-step behaviour of the emulator (a call ringing then being
answered, a hold's start/ok events, a transfer) is a L{Chain}: a list of steps
at offsets (milliseconds, taken from the traces) from the moment the chain
starts.  Only the next step is ever scheduled, and only once the previous
step ran, so steps with equal offsets (or any offsets when C{delay_scale} is
0) keep their order.  Each step is due at C{start + offset * delay_scale}
(not "previous step + delta"), so a late step does not delay the rest and a
single big C{Clock.advance()} runs a whole chain.
L{Scheduler.pending_calls} counts the outstanding C{DelayedCall}s so tests
can check for leaks; L{Scheduler.stop} cancels all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from callapi.logging import logger

Step = tuple[float, Callable[[], Any]]


class Chain:
    """
    An ordered sequence of steps run one after the other on a clock.

    Steps are C{(offset_ms, callable)}, offsets relative to the chain's start;
    they are stably sorted, so equal offsets run in the order given.  Steps
    may be added while the chain runs (L{add}); a step added with an offset
    earlier than the current position runs next.
    """

    _log = logger()

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        self._scheduler = scheduler
        self.name = name
        self._steps: deque[Step] = deque()
        self._position = 0.0
        self._origin = scheduler.clock.seconds()
        self._call: IDelayedCall | None = None
        self._running = False
        self.cancelled = False

    def add(self, offset_ms: float, step: Callable[[], Any]) -> Chain:
        """Insert a step at C{offset_ms} (after steps with the same offset)."""
        if self.cancelled:
            return self
        self._scheduler._chains.add(self)
        steps = list(self._steps)
        index = len(steps)
        for i, (off, _) in enumerate(steps):
            if off > offset_ms:
                index = i
                break
        steps.insert(index, (offset_ms, step))
        self._steps = deque(steps)
        if not self._running and self._call is None:
            self._schedule_next()
        elif self._call is not None and index == 0:
            # the new step comes before the one we are waiting for
            self._call.cancel()
            self._call = None
            self._schedule_next()
        return self

    @property
    def position_ms(self) -> float:
        """Offset of the step that ran last."""
        return self._position

    def cancel(self) -> None:
        """Drop every remaining step.  Idempotent."""
        self.cancelled = True
        self._steps.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._scheduler._forget(self)

    @property
    def pending(self) -> bool:
        """Whether a step is scheduled and has not run yet."""
        return self._call is not None and self._call.active()

    def _schedule_next(self) -> None:
        if self.cancelled:
            return
        if not self._steps:
            self._scheduler._forget(self)
            return
        offset, _ = self._steps[0]
        clock = self._scheduler.clock
        due = self._origin + offset * self._scheduler.delay_scale / 1000.0
        self._call = clock.callLater(max(0.0, due - clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        if not self._steps:
            return
        offset, step = self._steps.popleft()
        self._position = max(self._position, offset)
        self._running = True
        try:
            step()
        except Exception:
            self._log.failure("emulator step {name} at {offset} ms failed", name=self.name, offset=offset)
        finally:
            self._running = False
        if self._call is None:
            self._schedule_next()


class Scheduler:
    """
    Owns every L{Chain} of one emulator.

    @ivar delay_scale: multiplies every trace-derived delay; 0 runs steps as
        soon as possible, still in order.
    """

    def __init__(self, clock: IReactorTime, delay_scale: float = 1.0) -> None:
        if delay_scale < 0:
            raise ValueError("delay_scale must be >= 0")
        self.clock = clock
        self.delay_scale = delay_scale
        self._chains: set[Chain] = set()

    def chain(self, name: str, steps: list[Step] | None = None) -> Chain:
        """Start a new chain with C{steps} (more can be added later)."""
        ch = Chain(self, name)
        self._chains.add(ch)
        for offset, step in sorted(steps or [], key=lambda s: s[0]):
            ch._steps.append((offset, step))
        ch._schedule_next()
        return ch

    def _forget(self, chain: Chain) -> None:
        self._chains.discard(chain)

    @property
    def pending_calls(self) -> int:
        """Outstanding C{DelayedCall}s (at most one per chain)."""
        return sum(1 for ch in self._chains if ch.pending)

    def stop(self) -> None:
        """Cancel every chain."""
        for ch in list(self._chains):
            ch.cancel()
        self._chains.clear()
