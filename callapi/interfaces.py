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

    def notify(method: str, cmd_id: str, event: str, data: Any = None) -> None:
        """
        Send one notification.  C{data=None} omits the C{data} member.
        Must not raise; a closed sink drops silently.
        """
