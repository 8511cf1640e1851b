"""
Stand-ins for the proxy layer's registry and liveness, for contexts built
without them (unit tests, embedding): L{NullDialogRegistry} knows no dialog
but keeps claims, L{AlwaysReachable} says OpenSIPS is there.

The daemon never uses them: L{callapi.core.build_runner} passes the real
L{callapi.opensips.registry} and L{callapi.opensips.liveness} objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from callapi.interfaces import IDialogOwner, IDialogRegistry, IProxyStatus, ISubscription


@implementer(ISubscription)
class _NoWatch:
    """
    The subscription of an observer that is never called.
    """

    def cancel(self) -> None:
        """
        Nothing to stop.
        """


@implementer(IDialogRegistry)
class NullDialogRegistry:
    """
    An L{IDialogRegistry} that holds no dialog: C{get} is C{None},
    C{check} answers C{None} ("no such dialog": only asked after OpenSIPS
    said 404), C{resolve} answers the Call-ID itself (the pre-registry
    C{dlg_end_dlg dialog_id=<Call-ID>}, which OpenSIPS may match as an
    internal ID first: the real registry resolves).  Claims are kept, so
    commands still learn of each other's calls.
    """

    def __init__(self) -> None:
        self._owners: dict[str, IDialogOwner] = {}

    def get(self, callid: str) -> Any:
        return None

    def check(self, callid: str) -> Deferred[Any]:
        return succeed(None)

    def resolve(self, callid: str) -> Deferred[Any]:
        return succeed(callid)

    def claim(self, callid: str, owner: IDialogOwner) -> None:
        self._owners[callid] = owner

    def release(self, callid: str, owner: IDialogOwner) -> None:
        if self._owners.get(callid) is owner:
            del self._owners[callid]

    def owner(self, callid: str) -> IDialogOwner | None:
        return self._owners.get(callid)

    def dialogs(self) -> Iterator[Any]:
        return iter(())

    def sweep(self) -> Deferred[Any]:
        return succeed(None)

    def watch(self, observer: Callable[[Any], None]) -> ISubscription:
        return _NoWatch()


@implementer(IProxyStatus)
class AlwaysReachable:
    """
    An L{IProxyStatus} that never changes: reachable and subscribed.
    """

    reachable = True
    since = 0.0
    subscribed = True
    up_since: str | None = None
    restarts = 0

    def describe(self) -> str:
        return "OpenSIPS reachable (not monitored)"

    def watch(self, observer: Callable[[str], None]) -> ISubscription:
        return _NoWatch()
