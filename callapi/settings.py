"""
Every default of the daemon in one place: L{Settings}.

C{twistd callapi} (L{callapi.tap.Options}) and C{callapi-cmd}
(L{callapi.cli.cmd}) both build a L{Settings} from their command lines and
hand it to L{callapi.core}, which builds the daemon's parts from it; their
C{--help} texts show the defaults of L{DEFAULTS}.
"""

from __future__ import annotations

import attrs

from callapi.scenarios import Settings as CommandSettings


@attrs.frozen
class Settings:
    """
    What the daemon's parts are built from.  Times are in seconds, sizes in
    bytes; addresses use the forms of L{callapi.opensips.addresses}.

    @ivar listen: the WebSocket server's endpoint string (Twisted
        C{serverFromString} syntax).
    @ivar path: the HTTP path that accepts WebSocket upgrades.
    @ivar mi: OpenSIPS' mi_datagram socket, C{udp:HOST:PORT} or C{unix:/path}.
    @ivar events: where OpenSIPS sends EVI events (C{udp:IP:PORT},
        C{unix:/path}), or C{None}: an ephemeral UDP port on the local
        address that reaches MI.
    @ivar mi_timeout: seconds to wait for each MI reply.
    @ivar event_expire: C{event_subscribe} expire, seconds; refreshed every
        C{min(expire / 3, 60)} s (3.4 README, "Expiry").
    @ivar events_from: extra IPs EVI events may come from besides the MI
        address; C{("any",)} disables the check.
    @ivar mi_retries: re-sends of an idempotent MI request (C{dlg_list},
        C{dlg_end_dlg}, C{event_subscribe}, C{which}, C{uptime}) within its
        timeout; non-idempotent ones are never re-sent.
    @ivar probe_interval: seconds between C{uptime} liveness probes while
        OpenSIPS answers.
    @ivar probe_interval_down: the same while it does not (how soon a
        return is noticed).
    @ivar probe_timeout: seconds a probe waits for its reply.
    @ivar registry_sweep: seconds between full paged C{dlg_list} sweeps of
        the dialog registry (besides the one at each (re)connect).
    @ivar registry_linger: seconds an ended dialog stays in the registry.
    @ivar registry_cap: most dialogs the registry holds (ended ones are
        dropped first).
    @ivar max_message_size: largest WebSocket message accepted, bytes.
    @ivar allow_origin: browser origins allowed besides loopback and
        same-host pages; C{("*",)} allows any.
    @ivar log_level: minimum level of callapi's log (C{debug} ... C{critical}).
    @ivar log_file: also write callapi's log to this file, or C{None}.
    @ivar demo: run against the built-in OpenSIPS emulator.
    @ivar commands: the commands' own settings (timeouts, next hop):
        L{callapi.scenarios.Settings}.
    """

    listen: str = "tcp:5059:interface=127.0.0.1"
    path: str = "/call-api"
    mi: str = "udp:127.0.0.1:8080"
    events: str | None = None
    mi_timeout: float = 5.0
    event_expire: int = 120
    events_from: tuple[str, ...] = ()
    mi_retries: int = 2
    probe_interval: float = 5.0
    probe_interval_down: float = 1.0
    probe_timeout: float = 1.0
    registry_sweep: float = 300.0
    registry_linger: float = 60.0
    registry_cap: int = 200_000
    max_message_size: int = 1 << 20
    allow_origin: tuple[str, ...] = ()
    log_level: str = "info"
    log_file: str | None = None
    demo: bool = False
    commands: CommandSettings = attrs.field(factory=CommandSettings)


#: The defaults, for C{--help} texts and option tables.
DEFAULTS = Settings()
