"""
The names a manhole session starts with (L{manhole_namespace}).
"""

from __future__ import annotations

import types
from typing import Any

from twisted.application.service import IServiceCollection


class CommandTable(dict):  # type: ignore[type-arg]
    """
    A snapshot of the running commands, C{{(session number, cmd_id): Command}},
    whose repr shows one command a line with its method and state.
    """

    def __repr__(self) -> str:
        if not self:
            return "{}"
        lines = []
        for key, command in self.items():
            outstanding = getattr(command, "outstanding", None)
            lines.append(
                f"{key!r}: {getattr(command, 'method', '?')} "
                f"cmd_id={getattr(command, 'cmd_id', '?')!r} "
                f"state={getattr(command, 'state', '?')!r} "
                f"outstanding={outstanding!r}"
            )
        return "{" + ",\n ".join(lines) + "}"


def _child(root: IServiceCollection, name: str) -> Any:
    try:
        return root.getServiceNamed(name)
    except KeyError:
        return None


def manhole_namespace(root: Any, reactor: Any) -> dict[str, Any]:
    """
    The names a manhole session starts with (each session gets a copy).

    @param root: the root C{MultiService}; its children named C{opensips}
        and C{commands} are looked up when present.
    @param reactor: the reactor, exposed as C{reactor}.
    @return: C{root}; C{services}, a live read-only mapping name -> child
        service; C{mi} (the MI client: C{.pending}, C{.stats}) and C{hub}
        (the EventHub: C{.stats}, C{.registrations}), C{registry} (the
        DialogRegistry: C{.get(callid)}, C{.dialogs()}, C{.stats}) and
        C{status} (the ProxyStatus: C{.describe()}), C{None} without an
        C{opensips} child; C{subscriptions()}, the current
        SubscriptionManager (C{None} before start); C{commands()}, a
        L{CommandTable} snapshot of the CommandRunner's running commands
        (empty without a C{commands} child); C{hangups()}, the calls
        callapi is still trying to end (Call-ID -> PendingHangup);
        C{reactor}.
    """
    opensips = _child(root, "opensips")

    def subscriptions() -> Any:
        """The current SubscriptionManager of the opensips service (None before start)."""
        service = _child(root, "opensips")
        return getattr(service, "subscriptions", None)

    def commands() -> CommandTable:
        """The running commands: {(session number, cmd_id): Command}."""
        service = _child(root, "commands")
        running = getattr(getattr(service, "runner", None), "running", None) or {}
        return CommandTable(running)

    def hangups() -> dict[str, Any]:
        """The cleanups under way: {Call-ID: PendingHangup} (callapi.opensips.hangup)."""
        service = _child(root, "commands")
        table = getattr(getattr(getattr(service, "runner", None), "ctx", None), "hangups", None)
        return dict(getattr(table, "pending", {}))

    return {
        "root": root,
        "services": types.MappingProxyType(root.namedServices),
        "mi": getattr(opensips, "mi", None),
        "hub": getattr(opensips, "hub", None),
        "registry": getattr(opensips, "registry", None),
        "status": getattr(opensips, "status", None),
        "subscriptions": subscriptions,
        "commands": commands,
        "hangups": hangups,
        "reactor": reactor,
    }
