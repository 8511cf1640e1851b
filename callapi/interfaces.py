"""
The seams of callapi.

Scenario controllers talk to OpenSIPS only through L{IMIClient} (MI requests)
and L{IEventHub} (EVI events), and to the application only through
L{INotificationSink}.  Production implementations live in L{callapi.opensips.mi},
L{callapi.opensips.events} and L{callapi.rpc}; verified fakes live in
L{callapi.testing.fakes}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import Attribute, Interface


class IMIClient(Interface):
    """
    Sends OpenSIPS Management Interface requests (JSON-RPC 2.0 over a
    datagram socket, module C{mi_datagram}) and matches their replies.
    """

    pending = Attribute(
        "C{dict} of outstanding requests: request id -> (MI method, params). "
        "Read-only view for debugging (manhole) and tests."
    )

    def call(method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """
        Send one MI request.

        @param method: MI command name, e.g. C{"call_hold"} (3.x) or
            C{"callops:hold"} (4.0).
        @param params: named parameters (always an object, never an array).
        @param timeout: seconds to wait for the final reply; C{None} means
            the client's default.
        @return: C{Deferred} firing with the C{result} member of the final
            reply (any JSON value).  Provisional t_uac_dlg replies
            (C{{"Status": "1xx ..."}}, trace
            C{b_click_to_dial_pass_provisional_replies}) are skipped.
            Errbacks with L{callapi.errors.MIError} for a JSON-RPC error reply
            (code and message as OpenSIPS sent them), L{callapi.errors.MITimeout}
            when no final reply came in C{timeout} seconds, or
            L{callapi.errors.MIUnavailable} when the client is stopped.
            Cancelling the Deferred forgets the request (a late reply is then
            logged and dropped).
        """


class ISubscription(Interface):
    """
    One registration for EVI events made with L{IEventHub.listen}.
    """

    def cancel() -> None:
        """
        Stop delivering events to this registration.  Idempotent.
        """


class IEventHub(Interface):
    """
    Routes EVI events received from OpenSIPS (module C{event_datagram}) to the
    scenario controllers waiting for them, by event name and Call-ID.
    """

    def listen(event: str, callid: str, handler: Callable[[dict[str, Any]], None]) -> ISubscription:
        """
        Deliver every future C{event} (e.g. C{"E_CALL_HOLD"}) whose
        C{params.callid} equals C{callid} to C{handler(params)}.

        Lookup is O(1) per event.  The handler is called synchronously from
        the datagram receive path; it must not raise (exceptions are logged
        and swallowed by the hub).

        @return: an L{ISubscription}; cancel it when the scenario ends.
        """

    def listen_transfer(transfer_callid: str, handler: Callable[[dict[str, Any]], None]) -> ISubscription:
        """
        Deliver every future C{E_CALL_TRANSFER} whose C{params.transfer_callid}
        equals C{transfer_callid}.  Used where only the new call's Call-ID is
        known.  Same contract as L{listen}.
        """


class INotificationSink(Interface):
    """
    Where a running command reports its progress: in production the client's
    WebSocket session, which turns each call into a JSON-RPC notification
    C{{"jsonrpc": "2.0", "method": <command>, "params": {"cmd_id", "event",
    "data"}}} (docs/protocol.md, "Messages").
    """

    def notify(
        method: str, cmd_id: str, event: str, data: Any = None, extra: dict[str, Any] | None = None
    ) -> None:
        """
        Send one notification.  C{data=None} omits the C{data} member.
        C{extra}: more members of the notification's C{params} (e.g. an
        C{Error}'s C{calls}, docs/protocol.md "Error notifications"), never
        C{cmd_id}/C{event}/C{data}; callers pass it only when not empty.
        Must not raise; a closed sink drops silently.
        """


class IDialogOwner(Interface):
    """
    A running command that created or controls a call (e.g. CallStart's
    first call, or the new call of a transfer it started).  The registry
    tells it when another command acts on that call.
    """

    method = Attribute("C{str}: the owning command's JSON-RPC method, e.g. C{'CallStart'}.")
    cmd_id = Attribute("C{str}: the owning command's cmd_id.")

    def call_ended_by_api(callid: str, by_cmd_id: str) -> None:
        """
        Another command (CallEnd, or DELETE over REST later) is ending
        C{callid} through the proxy.  The owner must stop promptly: a
        ringing CallStart ends with C{Error(487 ...)}, and an answer that
        crosses that end is hung up, never transferred.
        """


class IDialogRegistry(Interface):
    """
    The proxy's dialogs as callapi knows them (L{callapi.opensips.registry}):
    loaded with paged C{dlg_list} when the daemon (re)connects, kept current
    from E_DLG_STATE_CHANGED / E_CALL_HOLD / E_CALL_TRANSFER, checked with
    C{dlg_list callid=} where it could be stale.  Records are
    L{callapi.opensips.dialog.DialogRecord}.
    """

    def get(callid: str) -> Any:
        """
        What the registry holds now for C{callid}: a C{DialogRecord} (also an
        ended one that still lingers, with C{state} C{DELETED}) or C{None}.
        No MI request.
        """

    def check(callid: str) -> Any:
        """
        Ask the proxy now (C{dlg_list callid=}; retried on timeout, it is
        idempotent) and update the record.

        @return: C{Deferred} firing with the fresh C{DialogRecord}, or with
            C{None} when OpenSIPS has no such dialog (404 "No such dialog");
            errbacks with L{callapi.errors.MITimeout} when OpenSIPS did not
            answer.
        """

    def resolve(callid: str) -> Any:
        """
        The internal dialog ID (C{"<hex>.<hex>"}) of the live dialog whose
        Call-ID is C{callid}, for C{dlg_end_dlg dialog_id=} (which tries the
        ID form first, OpenSIPS C{get_dlg_by_dialog_id}).  Uses the record
        when it has the ID, else C{dlg_list callid=}.

        @return: C{Deferred} firing with the ID, or C{None} when no live
            dialog has that Call-ID.
        """

    def claim(callid: str, owner: IDialogOwner) -> None:
        """
        C{owner} is responsible for C{callid} (also before the proxy has
        the dialog: a CallStart claims its Call-ID before C{t_uac_dlg}).
        """

    def release(callid: str, owner: IDialogOwner) -> None:
        """
        C{owner} no longer controls C{callid}.  Idempotent; no-op when
        another owner holds it.
        """

    def owner(callid: str) -> IDialogOwner | None:
        """
        The running command responsible for C{callid}, or C{None}.
        """

    def dialogs() -> Any:
        """
        An iterable of every C{DialogRecord} held now (live ones and ended
        ones that still linger).
        """

    def sweep() -> Any:
        """
        A full paged C{dlg_list} now, for dialogs whose events were lost.

        @return: C{Deferred} firing with C{None} when done; never fails.
        """

    def watch(observer: Callable[[Any], None]) -> ISubscription:
        """
        Call C{observer(record)} after every change of a record (state,
        held legs, from/to learnt, owner).  For lifecycle events later.
        """


class IProxyStatus(Interface):
    """
    Is OpenSIPS there? One object (L{callapi.opensips.liveness}) that the
    daemon keeps current with a cheap periodic MI probe (C{uptime}, whose
    C{"Up since"} also reveals a restart) and the subscription outcomes;
    read by commands (fail fast), and later by C{/readyz} and metrics.
    """

    reachable = Attribute("C{bool}: the last probe (or any MI reply) got an answer.")
    since = Attribute("C{float}: clock time (seconds) of the last change of C{reachable}.")
    subscribed = Attribute("C{bool}: every event subscription is in place and fresh.")
    up_since = Attribute("C{str} or C{None}: OpenSIPS' C{uptime} 'Up since' as last seen.")
    restarts = Attribute("C{int}: restarts noticed since the daemon started.")

    def describe() -> str:
        """
        One line for error texts, e.g. C{"OpenSIPS unreachable since
        09:21:17 (no MI reply for 12 s)"}.
        """

    def watch(observer: Callable[[str], None]) -> ISubscription:
        """
        Call C{observer(change)} with C{"reachable"}, C{"unreachable"} or
        C{"restarted"} when that happens (the subscriptions re-subscribe,
        the registry reloads).
        """
