"""
What every command (scenario controller) shares: its context, its lifecycle
(running -> ended | aborted), notification helpers and the bookkeeping that
makes cleanup total: every MI request, event registration and timer a
command creates is owned by it and released exactly once when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from callapi.errors import error_text
from callapi.interfaces import (
    IDialogOwner,
    IDialogRegistry,
    IEventHub,
    IMIClient,
    INotificationSink,
    IProxyStatus,
    ISubscription,
)
from callapi.logging import logger
from callapi.opensips.dialog import (
    DialogStateChanged,
    HoldEvent,
    TransferEvent,
    parse_dialog_state_changed,
    parse_hold,
    parse_transfer,
)
from callapi.opensips.hangup import HangupOutcome, Hangups
from callapi.opensips.names import MINames
from callapi.scenarios.machine import Machine
from callapi.scenarios.standalone import AlwaysReachable, NullDialogRegistry

#: A typed EVI input (L{callapi.opensips.dialog}).
_E = TypeVar("_E")


@attrs.define
class Settings:
    """
    Command timeouts, all in seconds.

    @ivar next_hop: CallStart: SIP URI given as C{next_hop} to C{t_uac_dlg}
        (the Go tool's C{sip.uri}), or C{None}.
    @ivar hold_timeout: longest a CallHold/CallUnhold waits for every leg's
        E_CALL_HOLD C{ok}/C{fail}; the default covers tm's C{fr_inv_timeout}
        (120 s) for a leg that never answers its re-INVITE.
    @ivar hold_event_grace: after OpenSIPS answered "OK", how long to wait
        for the first E_CALL_HOLD C{start} before reporting that no event
        came (lost datagram or broken subscription).
    @ivar hold_settle: when fewer than both legs reported C{start} one
        reactor turn after OpenSIPS' "OK", how much longer to wait for
        another C{start} before the set of legs counts as complete.
    @ivar hold_not_ready_retries: how often CallHold/CallUnhold re-send
        after 410 "Dialog not ready" (the call's ACK is on its way).
    @ivar hold_retry_delay: seconds between those re-sends.
    @ivar ring_timeout: CallStart: how long the caller's phone may ring
        before the INVITE is cancelled (C{t_uac_cancel}).
    @ivar cancel_grace: CallStart: after cancelling at the ring timeout,
        how long to wait for the INVITE's outcome (a 2xx may cross the
        CANCEL) before ending the dialog through the proxy anyway.
    @ivar answer_confirm_wait: CallStart: after the caller answered, how long
        to wait for the dialog's E_DLG_STATE_CHANGED 3->4 before trying the
        transfer anyway (404/410 answers are retried).
    @ivar transfer_start_timeout: how long to wait for E_CALL_TRANSFER
        C{start} after OpenSIPS accepted the transfer (no event at all is a
        real outcome: REFER rejected, NOTIFY race lost).
    @ivar transfer_timeout: how long to wait for C{ok}/C{fail} after
        C{start}; covers tm's C{fr_inv_timeout} (120 s).
    @ivar transfer_old_gone_grace: how long to still wait for C{start} once
        the transferred dialog ended.
    @ivar transfer_retries: CallStart: how often a 404/410 answer to
        C{call_transfer} is retried (the dialog is not confirmed yet).
    @ivar transfer_retry_delay: seconds between those retries.
    @ivar callee_ring_timeout: CallStart: how long the transfer target may
        ring (the new call in state 1/2) before it is cancelled through the
        proxy (C{dlg_end_dlg} of the early dialog sends CANCEL, trace
        C{3.4/g_dlg_end_dlg}); the C{callee_ring_timeout} param overrides it.
    @ivar hangup_deadline: how long a cleanup (L{callapi.opensips.hangup})
        keeps retrying to end a call before it gives up.
    """

    next_hop: str | None = None
    hold_timeout: float = 130.0
    hold_event_grace: float = 2.0
    hold_settle: float = 0.2
    hold_not_ready_retries: int = 4
    hold_retry_delay: float = 0.5
    ring_timeout: float = 60.0
    answer_confirm_wait: float = 2.0
    cancel_grace: float = 2.0
    transfer_start_timeout: float = 15.0
    transfer_timeout: float = 130.0
    transfer_old_gone_grace: float = 2.0
    transfer_retries: int = 3
    transfer_retry_delay: float = 0.5
    callee_ring_timeout: float = 60.0
    hangup_deadline: float = 30.0


def _hangups(ctx: Context) -> Hangups:
    return Hangups(ctx.mi, ctx.registry, ctx.names, ctx.clock, ctx.settings.hangup_deadline)


@attrs.define
class Context:
    """
    Everything a command may use; passed in, never global.

    @ivar registry: the proxy's dialogs (L{callapi.opensips.registry} in
        the daemon; L{NullDialogRegistry} when not given).
    @ivar status: is OpenSIPS reachable (L{callapi.opensips.liveness} in
        the daemon; L{AlwaysReachable} when not given).
    @ivar hangups: the daemon's cleanups (built from the fields above when
        not given); the manhole lists C{hangups.pending}.
    """

    mi: IMIClient
    events: IEventHub
    clock: IReactorTime
    names: MINames = attrs.Factory(MINames)
    settings: Settings = attrs.Factory(Settings)
    registry: IDialogRegistry = attrs.Factory(NullDialogRegistry)
    status: IProxyStatus = attrs.Factory(AlwaysReachable)
    hangups: Hangups = attrs.Factory(_hangups, takes_self=True)


@implementer(IDialogOwner)
class Command:
    """
    Base class of every command.

    Subclasses set L{method} and implement L{start}; they report progress with
    L{emit}, finish with L{end} or L{fail}, and create MI requests, event
    registrations and timers only through L{request}, L{listen} and
    L{call_later}, so that L{release} can undo all of them.

    Commands that are state machines (L{callapi.scenarios.machine}) set
    L{machine} in C{__init__}; C{abort} is then one of their inputs.

    @ivar finished: fires with C{self} once the command is over (ended or
        aborted); never fails.
    @ivar machine: the command's flow, or C{None} (one-step commands).
    """

    method: ClassVar[str] = ""
    #: the command talks to OpenSIPS: refused up front while it is
    #: unreachable (L{callapi.errors.OPENSIPS_UNREACHABLE}); Echo does not.
    needs_opensips: ClassVar[bool] = True
    _log = logger()

    def __init__(
        self,
        ctx: Context,
        cmd_id: str,
        params: dict[str, Any],
        sink: INotificationSink,
        cmd_id_generated: bool = False,
    ) -> None:
        """
        @param cmd_id_generated: C{cmd_id} was made by the server (a UUID),
            not chosen by the client.
        """
        self.ctx = ctx
        self.cmd_id = cmd_id
        self.cmd_id_generated = cmd_id_generated
        self.params = params
        self.sink = sink
        self.machine: Machine[Any] | None = None
        self._lifecycle = "created"
        self.done = False
        self.finished: Deferred[Command] = Deferred()
        self._subscriptions: list[ISubscription] = []
        self._timers: list[IDelayedCall] = []
        self._requests: set[Deferred[Any]] = set()
        self._claimed: set[str] = set()
        self._hangup_waits: set[Deferred[HangupOutcome]] = set()
        #: Call-ID -> what the command knows of that call's state, for the
        #: C{calls} of an C{Error} (docs/protocol.md "Error notifications")
        self.calls: dict[str, str] = {}
        self.started_at = ctx.clock.seconds()

    def __repr__(self) -> str:
        return f"<{self.method} {self.cmd_id} {self.state}>"

    @property
    def state(self) -> str:
        """
        A short text for debugging (manhole): C{created}, the machine's
        phase (lower case) or C{running}, then C{ended} / C{aborted: why}.
        """
        if self.done or self.machine is None or self._lifecycle == "created":
            return self._lifecycle
        return self.machine.phase.name.lower()

    @staticmethod
    def check(params: dict[str, Any]) -> dict[str, Any]:
        """
        Validate a command's params before anything is sent (every command
        defines it).

        @return: the checked params.
        @raise RPCError: -32602 naming the bad parameter.
        """
        raise NotImplementedError

    # lifecycle

    def run(self) -> None:
        """
        Start the command; an exception in L{start} becomes an C{Error}.
        """
        self._lifecycle = "running"
        try:
            self.start()
        except Exception as e:
            self._log.failure("command {cmd_id} crashed in start", cmd_id=self.cmd_id)
            self.fail(f"internal error: {e}")

    def start(self) -> None:
        """
        Begin the command's work (called once, by L{run}, after the
        C{Started} result was written).  Subclasses implement it.
        """
        raise NotImplementedError

    @staticmethod
    def check_context(params: dict[str, Any], ctx: Context) -> None:
        """
        Checks of already validated params that depend on the proxy (e.g.
        a capability); raises L{callapi.errors.RPCError} -32602.
        """

    def result_extra(self) -> dict[str, Any]:
        """
        Extra members of the C{Started} result (e.g. CallStart's C{callid}).
        """
        return {}

    def emit(self, event: str, data: Any = None, extra: dict[str, Any] | None = None) -> None:
        """
        Send one notification, unless the command is over.

        @param extra: more members of the notification's params (e.g.
            C{calls}), passed to the sink only when given.
        """
        if self.done:
            return
        if extra:
            self.sink.notify(self.method, self.cmd_id, event, data, extra=extra)
        else:
            self.sink.notify(self.method, self.cmd_id, event, data)

    def end(self) -> None:
        """
        Send C{Ended} and release everything.  Later calls do nothing.
        """
        if self.done:
            return
        self.emit("Ended")
        self._finish("ended")

    def shutdown(self) -> None:
        """
        The daemon stops: end with C{Error "callapi is shutting down"}.
        Commands that own a call they must not abandon override it.
        """
        self.fail("callapi is shutting down")

    def fail(self, reason: BaseException | str) -> None:
        """
        Send one C{Error} (C{data} = human-readable text) then C{Ended}.
        """
        if self.done:
            return
        text = reason if isinstance(reason, str) else error_text(reason)
        self._log.info(
            "command {cmd_id} {method} failed: {error}", cmd_id=self.cmd_id, method=self.method, error=text
        )
        calls = [{"callid": callid, "state": state} for callid, state in self.calls.items()]
        self.emit("Error", text, {"calls": calls} if calls else None)
        self.end()

    def note_call(self, callid: str, state: str) -> None:
        """
        Record what the command knows of a call it created or controls
        (C{"ringing"}, C{"connected"}, C{"ended"}, C{"unknown"}, ...): every
        later C{Error} names it in C{calls}.
        """
        self.calls[callid] = state

    # calls owned (IDialogOwner) and ended (cleanups)

    def claim(self, callid: str) -> None:
        """
        Tell the registry this command controls C{callid} (released by
        L{release}); CallEnd on it then calls L{call_ended_by_api}.
        """
        self.ctx.registry.claim(callid, self)
        self._claimed.add(callid)

    def call_ended_by_api(self, callid: str, by_cmd_id: str) -> None:
        """
        L{callapi.interfaces.IDialogOwner}: another command ends C{callid}.
        Commands that own calls feed it to their flow; the default ignores it.
        """

    def hang_up(self, callid: str, then: Callable[[HangupOutcome], None]) -> None:
        """
        End C{callid} through the proxy with the daemon's cleanup
        (L{callapi.opensips.hangup}: resolved, retried until OpenSIPS
        confirms, bounded by C{Settings.hangup_deadline}) and call
        C{then(outcome)} while the command runs.  L{release} stops the
        waiting only: the cleanup itself goes on.  A call noted with
        L{note_call} is then noted C{"ended"} (or C{"unknown"} when the
        cleanup failed).
        """
        d = self.ctx.hangups.end(callid, f"{self.method} {self.cmd_id}")
        self._hangup_waits.add(d)

        def done(outcome: HangupOutcome) -> None:
            self._hangup_waits.discard(d)
            if callid in self.calls:
                self.note_call(callid, "ended" if outcome.done else "unknown")
            if not self.done:
                self._guard(then, outcome)

        d.addCallback(done)

    def abort(self, why: str = "aborted") -> None:
        """
        Stop silently (the client went away or the daemon stops): release
        everything, notify nothing.  For a state machine this is its
        C{abort} input (L{abort_flow} unless the flow says otherwise).
        """
        if self.done:
            return
        if self.machine is not None:
            self.machine.feed("abort", why)
        else:
            self.abort_flow(why)

    def abort_flow(self, why: str) -> None:
        """
        The default C{abort} action: release everything, notify nothing.
        The call itself is not touched.
        """
        if self.done:
            return
        self._log.info(
            "command {cmd_id} {method} aborted: {why}", cmd_id=self.cmd_id, method=self.method, why=why
        )
        self._finish("aborted: " + why)

    def _finish(self, state: str) -> None:
        self.done = True
        self._lifecycle = state
        if self.machine is not None:
            self.machine.terminate()
        self.release()
        self.finished.callback(self)

    def release(self) -> None:
        """
        Cancel every event registration, timer and outstanding MI request.
        """
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.cancel()
        timers, self._timers = self._timers, []
        for timer in timers:
            if timer.active():
                timer.cancel()
        requests, self._requests = self._requests, set()
        for d in requests:
            d.cancel()
        claimed, self._claimed = self._claimed, set()
        for callid in claimed:
            self.ctx.registry.release(callid, self)

    @property
    def outstanding(self) -> dict[str, int]:
        """
        Counts of what the command still owns (for leak checks).
        """
        return {
            "subscriptions": len(self._subscriptions),
            "timers": sum(1 for t in self._timers if t.active()),
            "requests": len(self._requests),
        }

    # owned resources

    def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        on_result: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        """
        Send an MI request owned by this command.

        C{on_result(result)} or C{on_error(exception)} runs only while the
        command is not over; the default C{on_error} is L{fail}.  An exception
        in either handler fails the command.
        """
        d = self.ctx.mi.call(method, params, timeout)
        self._requests.add(d)

        def result(value: Any) -> None:
            self._requests.discard(d)
            if not self.done:
                self._guard(on_result, value)

        def error(reason: Any) -> None:
            self._requests.discard(d)
            if reason.check(CancelledError) or self.done:
                return
            self._guard(on_error or self.fail, reason.value)

        d.addCallbacks(result, error)

    def listen(self, event: str, callid: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """
        Register for C{event} on C{callid} until the command ends.
        """
        self._subscriptions.append(
            self.ctx.events.listen(event, callid, lambda params: self._event(handler, params))
        )

    def listen_transfer(self, transfer_callid: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """
        Register for E_CALL_TRANSFER on the new call C{transfer_callid}.
        """
        self._subscriptions.append(
            self.ctx.events.listen_transfer(transfer_callid, lambda params: self._event(handler, params))
        )

    def listen_dialog(self, callid: str, handler: Callable[[DialogStateChanged], None]) -> None:
        """
        Register for E_DLG_STATE_CHANGED of C{callid}, as typed events
        (malformed ones are dropped by L{parse_dialog_state_changed}).
        """
        self._listen_typed("E_DLG_STATE_CHANGED", callid, parse_dialog_state_changed, handler)

    def listen_transfers(self, callid: str, handler: Callable[[TransferEvent], None]) -> None:
        """
        Register for E_CALL_TRANSFER of C{callid}, as typed events.
        """
        self._listen_typed("E_CALL_TRANSFER", callid, parse_transfer, handler)

    def listen_hold(self, callid: str, handler: Callable[[HoldEvent], None]) -> None:
        """
        Register for E_CALL_HOLD of C{callid}, as typed events.
        """
        self._listen_typed("E_CALL_HOLD", callid, parse_hold, handler)

    def _listen_typed(
        self,
        event: str,
        callid: str,
        parse: Callable[[dict[str, Any]], _E | None],
        handler: Callable[[_E], None],
    ) -> None:
        """
        Register for C{event} of C{callid}; each params dict is parsed into
        its typed input (L{callapi.opensips.dialog}) and a malformed one,
        which C{parse} logged and turned into C{None}, never reaches
        C{handler}.
        """

        def typed(params: dict[str, Any]) -> None:
            parsed = parse(params)
            if parsed is not None:
                handler(parsed)

        self.listen(event, callid, typed)

    def call_later(self, delay: float, f: Callable[..., None], *args: Any) -> IDelayedCall:
        """
        Schedule C{f(*args)} on the context clock, cancelled by L{release}.
        """
        self._timers = [t for t in self._timers if t.active()]

        def fire() -> None:
            if not self.done:
                self._guard(f, *args)

        timer = self.ctx.clock.callLater(delay, fire)
        self._timers.append(timer)
        return timer

    def _event(self, handler: Callable[[dict[str, Any]], None], params: dict[str, Any]) -> None:
        if not self.done:
            self._guard(handler, params)

    def _guard(self, f: Callable[..., None], *args: Any) -> None:
        try:
            f(*args)
        except Exception as e:
            self._log.failure("command {cmd_id} {method} crashed", cmd_id=self.cmd_id, method=self.method)
            self.fail(f"internal error: {e}")
