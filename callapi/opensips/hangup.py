"""
Cleanup that finishes: ending a call the daemon is responsible for
(CallEnd's call, CallStart's first call after a failed transfer, a
transferred call after success, an answer that crossed a cancel) until
OpenSIPS confirms it, within a bounded time.

One attempt: resolve the Call-ID to the live dialog's internal ID
(L{IDialogRegistry.resolve}; never the bare Call-ID, which C{dlg_end_dlg}
would first try as the internal ID of some other dialog, OpenSIPS
C{get_dlg_by_dialog_id} in C{modules/dialog/dlg_hash.c}), then
C{dlg_end_dlg dialog_id=<ID>} (C{dialog:end_dlg} in 4.0: BYE to both legs
of a confirmed dialog, CANCEL of an early one, trace C{3.4/g_dlg_end_dlg}).

Outcomes: C{"ended"} (OpenSIPS answered C{OK}), C{"gone"} (no live dialog
has that Call-ID: C{resolve} found none, or C{dlg_end_dlg} answered 404 and
L{IDialogRegistry.check} confirmed it), C{"failed"} (a non-retryable error,
or the deadline passed).  Timeouts, other errors and a 404 the check
contradicts are retried with doubling delays; each retry is logged at
C{warn}.  The whole cleanup is bounded by C{deadline} plus one attempt
(a resolve and one MI request, each bounded by the MI client's timeout).

Pending cleanups are listed in L{Hangups.pending} (manhole:
C{runner.ctx.hangups.pending}).  Two cleanups of one Call-ID share one
attempt loop.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from callapi.errors import MIError, MIUnavailable
from callapi.interfaces import IDialogRegistry, IMIClient
from callapi.logging import logger
from callapi.opensips.dialog import DialogState
from callapi.opensips.names import MINames

_log = logger("callapi.opensips.hangup")

#: Default bound of one cleanup, seconds (then one more attempt may run).
DEADLINE = 30.0
#: First delay between attempts, seconds; doubled up to L{MAX_DELAY}.
FIRST_DELAY = 0.5
MAX_DELAY = 4.0


@attrs.frozen
class HangupOutcome:
    """
    How one cleanup ended.

    @ivar callid: the Call-ID ended.
    @ivar result: C{"ended"}, C{"gone"} or C{"failed"}.
    @ivar attempts: C{dlg_end_dlg} requests sent (0 when resolve found no
        dialog at once).
    @ivar detail: for C{"failed"}: the last error text; else C{""}.
    @ivar last_error: the last exception seen (for C{"failed"}), or C{None}.
    """

    callid: str
    result: str
    attempts: int = 0
    detail: str = ""
    last_error: BaseException | None = None

    @property
    def done(self) -> bool:
        """
        C{True} when the call is known to be over (C{ended} or C{gone}).
        """
        return self.result in ("ended", "gone")


@attrs.define
class PendingHangup:
    """
    A cleanup under way (manhole view).

    @ivar callid: the Call-ID being ended.
    @ivar why: who asked and why, e.g. C{"CallEnd e1"}.
    @ivar started_at: clock seconds.
    @ivar attempts: C{dlg_end_dlg} requests sent so far.
    @ivar last_error: the last error text, or C{""}.
    """

    callid: str
    why: str
    started_at: float
    attempts: int = 0
    last_error: str = ""
    waiters: list[Deferred[HangupOutcome]] = attrs.Factory(list)


def retryable(reason: BaseException) -> bool:
    """
    JSON-RPC errors (negative codes: bad params, unknown command) and a
    stopped MI client do not get better by retrying; timeouts and
    OpenSIPS' own errors (5xx, 404 contradicted by the check) may.
    """
    if isinstance(reason, MIUnavailable):
        return False
    return not (isinstance(reason, MIError) and reason.code < 0)


class Hangups:
    """
    The daemon's cleanups: L{end} starts (or joins) one, L{pending} lists
    the ones under way.

    @ivar pending: Call-ID -> L{PendingHangup}.
    """

    def __init__(
        self,
        mi: IMIClient,
        registry: IDialogRegistry,
        names: MINames,
        clock: IReactorTime,
        deadline: float = DEADLINE,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        """
        @param deadline: seconds after which no new attempt starts.
        @param first_delay: seconds before the first retry, doubled up to
            C{max_delay}.
        """
        self.mi = mi
        self.registry = registry
        self.names = names
        self.clock = clock
        self.deadline = deadline
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.pending: dict[str, PendingHangup] = {}

    def end(self, callid: str, why: str = "") -> Deferred[HangupOutcome]:
        """
        End the dialog whose Call-ID is C{callid} (joining a cleanup of the
        same Call-ID under way).

        @param why: for the log and the manhole, e.g. C{"CallEnd e1"}.
        @return: C{Deferred} firing with a L{HangupOutcome}; never fails.
            Cancelling it only stops waiting: the cleanup goes on.
        """
        waiter: Deferred[HangupOutcome] = Deferred()
        pending = self.pending.get(callid)
        if pending is not None:
            _log.debug("joining the cleanup of {callid} ({why})", callid=callid, why=why)
            pending.waiters.append(waiter)
            return waiter
        pending = PendingHangup(callid, why, self.clock.seconds())
        pending.waiters.append(waiter)
        self.pending[callid] = pending
        _log.debug("ending call {callid} ({why})", callid=callid, why=why)
        Deferred.fromCoroutine(self._run(pending)).addCallback(self._done, pending)
        return waiter

    def _done(self, outcome: HangupOutcome, pending: PendingHangup) -> None:
        if self.pending.get(pending.callid) is pending:
            del self.pending[pending.callid]
        # the ordinary case (ended at the first attempt) is debug: one line per
        # call at info would be most of a busy daemon's log; retries (warn
        # each) and their outcome stay visible
        if not outcome.done:
            log = _log.warn
        elif outcome.attempts > 1:
            log = _log.info
        else:
            log = _log.debug
        log(
            "cleanup of {callid} ({why}): {result} after {attempts} attempt(s){detail}",
            callid=outcome.callid,
            why=pending.why,
            result=outcome.result,
            attempts=outcome.attempts,
            detail=f": {outcome.detail}" if outcome.detail else "",
        )
        for waiter in pending.waiters:
            if not waiter.called:
                waiter.callback(outcome)

    async def _run(self, pending: PendingHangup) -> HangupOutcome:
        callid = pending.callid
        delay = self.first_delay
        last: BaseException | None = None
        while True:
            try:
                outcome = await self._attempt(pending)
            except Exception as e:
                last = e
                pending.last_error = str(e) or e.__class__.__name__
                if not retryable(e):
                    return HangupOutcome(callid, "failed", pending.attempts, pending.last_error, e)
            else:
                if outcome is not None:
                    return outcome
            if self.clock.seconds() + delay > pending.started_at + self.deadline:
                return HangupOutcome(
                    callid,
                    "failed",
                    pending.attempts,
                    f"{pending.last_error} (gave up after {pending.attempts} attempt(s) in "
                    f"{self.clock.seconds() - pending.started_at:g} s)",
                    last,
                )
            _log.warn(
                "ending call {callid} ({why}): attempt {attempts} failed ({error}); retrying in {delay:g} s",
                callid=callid,
                why=pending.why,
                attempts=pending.attempts,
                error=pending.last_error,
                delay=delay,
            )
            await deferLater(self.clock, delay, lambda: None)
            delay = min(delay * 2, self.max_delay)

    async def _attempt(self, pending: PendingHangup) -> HangupOutcome | None:
        """
        One resolve + C{dlg_end_dlg}.

        @return: the outcome, or C{None} to retry (a 404 the check
            contradicts).
        @raise Exception: what failed (retried when L{_retryable}).
        """
        callid = pending.callid
        dialog_id = await self.registry.resolve(callid)
        if dialog_id is None:
            return HangupOutcome(callid, "gone", pending.attempts)
        pending.attempts += 1
        try:
            await self.mi.call(self.names.end_dialog, {"dialog_id": dialog_id})
        except MIError as e:
            if e.code != 404:
                raise
            record = await self.registry.check(callid)
            if record is None or record.state is DialogState.DELETED:
                return HangupOutcome(callid, "gone", pending.attempts)
            pending.last_error = f"{e}, but dialog {callid} is still in state {int(record.state)}"
            return None
        return HangupOutcome(callid, "ended", pending.attempts)


def end_dialog(
    mi: IMIClient,
    registry: IDialogRegistry,
    names: MINames,
    clock: IReactorTime,
    callid: str,
    deadline: float = DEADLINE,
) -> Deferred[HangupOutcome]:
    """
    End one dialog without a shared L{Hangups} (same contract as
    L{Hangups.end}).
    """
    return Hangups(mi, registry, names, clock, deadline).end(callid)


def finished(callid: str) -> Deferred[HangupOutcome]:
    """
    An already known outcome: C{callid} is gone (nothing to end).
    """
    return succeed(HangupOutcome(callid, "gone"))


__all__ = ["HangupOutcome", "Hangups", "PendingHangup", "end_dialog", "finished"]
