"""
Builds the daemon's parts from a L{callapi.settings.Settings}: the OpenSIPS
side (L{build_opensips}), the command runner (L{build_runner}) and the
WebSocket server (L{build_websocket}).  C{twistd callapi}
(L{callapi.tap.makeService}) composes all of them into its service tree;
C{callapi-cmd} (L{callapi.cli.cmd.run}) uses the first two in-process.

Nothing here touches the global reactor: every builder receives it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString

from callapi.opensips.service import OpenSIPSService
from callapi.rpc import CommandRunner
from callapi.scenarios import Context
from callapi.settings import Settings
from callapi.ws import CallApiFactory, WebSocketService


def build_opensips(settings: Settings, reactor: Any) -> OpenSIPSService:
    """
    The (unstarted) OpenSIPS side: MI socket, event socket, subscriptions.

    @param settings: uses C{mi}, C{events}, C{mi_timeout}, C{event_expire},
        C{events_from}, C{mi_retries}, the C{probe_*} and C{registry_*}
        values.
    @param reactor: provides C{IReactorUDP}, C{IReactorTime} (and
        C{IReactorUNIXDatagram} for C{unix:} addresses).
    @raise callapi.opensips.addresses.AddressError: an address that cannot
        be parsed.
    """
    return OpenSIPSService(
        reactor,
        settings.mi,
        settings.events,
        mi_timeout=settings.mi_timeout,
        event_expire=settings.event_expire,
        events_from=settings.events_from,
        mi_retries=settings.mi_retries,
        probe_interval=settings.probe_interval,
        probe_interval_down=settings.probe_interval_down,
        probe_timeout=settings.probe_timeout,
        registry_sweep=settings.registry_sweep,
        registry_linger=settings.registry_linger,
        registry_cap=settings.registry_cap,
    )


def build_runner(settings: Settings, opensips: OpenSIPSService, reactor: Any) -> CommandRunner:
    """
    The command runner, wired to C{opensips}' MI client, event hub, MI
    names (the object the service updates from the proxy's C{which}),
    dialog registry and liveness status.

    @param settings: uses C{commands} (L{callapi.scenarios.Settings}).
    @param reactor: the commands' clock (C{IReactorTime}).
    """
    ctx = Context(
        mi=opensips.mi,
        events=opensips.hub,
        clock=reactor,
        names=opensips.names,
        settings=settings.commands,
        registry=opensips.registry,
        status=opensips.status,
    )
    return CommandRunner(ctx)


class RunnerService(Service):
    """
    Aborts running commands (with an Error) when the daemon stops.

    @ivar runner: the L{CommandRunner}.
    """

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    def stopService(self) -> None:
        super().stopService()
        self.runner.stop()


def build_websocket(settings: Settings, runner: CommandRunner, reactor: Any) -> WebSocketService:
    """
    The (unstarted) WebSocket JSON-RPC server of C{runner}.

    @param settings: uses C{listen}, C{path}, C{max_message_size} and
        C{allow_origin}.
    @param reactor: provides C{IReactorTCP} (or what the C{listen} endpoint
        needs) and C{IReactorTime}.
    @raise SystemExit: one line, for a C{listen} endpoint string Twisted
        cannot parse.
    """
    factory = CallApiFactory(
        runner,
        settings.path,
        settings.max_message_size,
        reactor=reactor,
        allowed_origins=settings.allow_origin,
    )
    try:
        endpoint = serverFromString(reactor, settings.listen)
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"callapi: error: --listen {settings.listen!r}: {e}") from None
    return WebSocketService(endpoint, factory)
