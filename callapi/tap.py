"""
C{twistd callapi}: command-line options and the service tree.

This is the only module that touches the global reactor (and only when
L{makeService} is not given one).  L{Options} resolves the command line,
then the YAML file, then the defaults of L{callapi.settings.Settings}, into
a L{Settings} (L{Options.settings}); L{callapi.core} builds the parts from
it.  The tree, each child named:

  callapi (L{CallApiService})
    demo       the embedded OpenSIPS emulator (only with --demo)
    opensips   MI socket + event socket + subscriptions
    commands   stops running commands on shutdown
    websocket  the Autobahn WebSocket JSON-RPC server
    manhole    the SSH debugging console (only with --manhole)
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.python import usage

from callapi import config as configfile
from callapi.logging import logger
from callapi.opensips.addresses import AddressError, parse_address
from callapi.settings import DEFAULTS as SETTINGS_DEFAULTS
from callapi.settings import Settings

_COMMANDS = SETTINGS_DEFAULTS.commands

#: Option name -> default; every value comes from L{callapi.settings.Settings}.
DEFAULTS: dict[str, Any] = {
    "listen": SETTINGS_DEFAULTS.listen,
    "path": SETTINGS_DEFAULTS.path,
    "mi": SETTINGS_DEFAULTS.mi,
    "events": SETTINGS_DEFAULTS.events,
    "mi-timeout": SETTINGS_DEFAULTS.mi_timeout,
    "event-expire": SETTINGS_DEFAULTS.event_expire,
    "max-message-size": SETTINGS_DEFAULTS.max_message_size,
    "mi-retries": SETTINGS_DEFAULTS.mi_retries,
    "probe-interval": SETTINGS_DEFAULTS.probe_interval,
    "probe-interval-down": SETTINGS_DEFAULTS.probe_interval_down,
    "probe-timeout": SETTINGS_DEFAULTS.probe_timeout,
    "registry-sweep": SETTINGS_DEFAULTS.registry_sweep,
    "registry-linger": SETTINGS_DEFAULTS.registry_linger,
    "registry-cap": SETTINGS_DEFAULTS.registry_cap,
    "hold-timeout": _COMMANDS.hold_timeout,
    "ring-timeout": _COMMANDS.ring_timeout,
    "transfer-start-timeout": _COMMANDS.transfer_start_timeout,
    "transfer-timeout": _COMMANDS.transfer_timeout,
    "callee-ring-timeout": _COMMANDS.callee_ring_timeout,
    "hangup-deadline": _COMMANDS.hangup_deadline,
    "sip-uri": _COMMANDS.next_hop,
    "log-level": SETTINGS_DEFAULTS.log_level,
    "log-file": SETTINGS_DEFAULTS.log_file,
    "allow-origin": None,
    "events-from": None,
    "manhole": None,
    "manhole-keys": None,
    "manhole-key-dir": None,
}

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name} must be a number of seconds, not {value!r}") from None
    if not number > 0 or number != number or number == float("inf"):
        raise usage.UsageError(f"--{name} must be a positive number of seconds")
    return number


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise usage.UsageError(f"--{name} must be a whole number, not {value!r}") from None
    if number <= 0:
        raise usage.UsageError(f"--{name} must be positive")
    return number


def _whole_number(name: str, value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise usage.UsageError(f"--{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise usage.UsageError(f"--{name} must not be negative")
    return number


class Options(usage.Options):
    """
    Options of C{twistd callapi}.  Every option can also come from the YAML
    file given with C{--config} (see L{callapi.config}); the command line
    wins.  A bad value exits with one line on stderr and status 1.
    """

    synopsis = "[options]"
    longdesc = (
        "Control SIP calls running through OpenSIPS over WebSocket JSON-RPC. "
        "Use --demo to run against the built-in OpenSIPS emulator."
    )

    optParameters = [
        ["config", "c", None, "YAML configuration file (the Go Call API's call-api.yml keys work)"],
        ["listen", None, None, f"WebSocket server endpoint [default: {DEFAULTS['listen']}]"],
        ["path", None, None, f"HTTP path for WebSocket upgrades [default: {DEFAULTS['path']}]"],
        [
            "mi",
            None,
            None,
            f"OpenSIPS mi_datagram socket, udp:HOST:PORT or unix:/path [default: {DEFAULTS['mi']}]",
        ],
        [
            "events",
            None,
            None,
            "where OpenSIPS sends EVI events, udp:IP:PORT or unix:/path "
            "[default: an ephemeral UDP port on the address that reaches MI]",
        ],
        ["mi-timeout", None, None, f"seconds to wait for an MI reply [default: {DEFAULTS['mi-timeout']}]"],
        [
            "event-expire",
            None,
            None,
            "event_subscribe expire, seconds; refreshed every "
            f"min(expire/3, 60) s [default: {DEFAULTS['event-expire']}]",
        ],
        [
            "mi-retries",
            None,
            None,
            "re-sends of an idempotent MI request (dlg_list, dlg_end_dlg, event_subscribe, which, "
            f"uptime) within its timeout; 0 = none [default: {DEFAULTS['mi-retries']}]",
        ],
        [
            "probe-interval",
            None,
            None,
            f"seconds between uptime liveness probes [default: {DEFAULTS['probe-interval']}]",
        ],
        [
            "probe-interval-down",
            None,
            None,
            "seconds between probes while OpenSIPS does not answer "
            f"[default: {DEFAULTS['probe-interval-down']}]",
        ],
        [
            "probe-timeout",
            None,
            None,
            f"seconds a liveness probe waits for its reply [default: {DEFAULTS['probe-timeout']}]",
        ],
        [
            "registry-sweep",
            None,
            None,
            "seconds between full dlg_list sweeps of the dialog registry "
            f"[default: {DEFAULTS['registry-sweep']}]",
        ],
        [
            "registry-linger",
            None,
            None,
            f"seconds an ended dialog stays in the registry [default: {DEFAULTS['registry-linger']}]",
        ],
        [
            "registry-cap",
            None,
            None,
            f"most dialogs the registry holds [default: {DEFAULTS['registry-cap']}]",
        ],
        [
            "max-message-size",
            None,
            None,
            f"largest WebSocket message accepted, bytes [default: {DEFAULTS['max-message-size']}]",
        ],
        [
            "hold-timeout",
            None,
            None,
            f"seconds a CallHold/CallUnhold waits for every leg [default: {DEFAULTS['hold-timeout']}]",
        ],
        [
            "ring-timeout",
            None,
            None,
            f"seconds CallStart lets the caller ring before cancelling [default: {DEFAULTS['ring-timeout']}]",
        ],
        [
            "transfer-start-timeout",
            None,
            None,
            "seconds to wait for E_CALL_TRANSFER start after a "
            "transfer was accepted "
            f"[default: {DEFAULTS['transfer-start-timeout']}]",
        ],
        [
            "transfer-timeout",
            None,
            None,
            f"seconds to wait for a started transfer's outcome [default: {DEFAULTS['transfer-timeout']}]",
        ],
        [
            "callee-ring-timeout",
            None,
            None,
            "seconds CallStart's callee (the transfer target) may ring before its call is cancelled; "
            f"the callee_ring_timeout param overrides it [default: {DEFAULTS['callee-ring-timeout']}]",
        ],
        [
            "hangup-deadline",
            None,
            None,
            "seconds callapi keeps re-trying to end a call it is responsible for "
            f"[default: {DEFAULTS['hangup-deadline']}]",
        ],
        [
            "events-from",
            None,
            None,
            "comma-separated extra IPs EVI events may come from besides "
            "the MI address (multi-homed OpenSIPS); 'any' disables the check",
        ],
        [
            "allow-origin",
            None,
            None,
            "comma-separated browser origins allowed to connect besides "
            "loopback and same-host pages (e.g. https://app.example.com); * = any",
        ],
        ["sip-uri", None, None, "next hop (OpenSIPS' SIP URI) for click-to-dial INVITEs"],
        [
            "log-level",
            None,
            None,
            f"minimum level of callapi's log, one of {', '.join(LOG_LEVELS)} [default: info]",
        ],
        ["log-file", None, None, "also write callapi's log to this file"],
        ["manhole", None, None, "SSH endpoint for the debugging console, e.g. tcp:2222:interface=127.0.0.1"],
        ["manhole-keys", None, None, "authorized_keys file for the manhole (no passwords)"],
        ["manhole-key-dir", None, None, "directory for the manhole's SSH host key [default: a temp dir]"],
    ]
    optFlags = [
        ["demo", None, "run against the built-in OpenSIPS EMULATOR (no OpenSIPS needed)"],
        ["manhole-allow-remote", None, "allow the manhole to bind a non-loopback address"],
    ]

    def opt_version(self) -> None:
        """
        Print callapi's version (then Twisted's, Autobahn's, Python's) and exit.
        """
        from callapi import version_text

        print(version_text())
        raise SystemExit(0)

    def postOptions(self) -> None:
        try:
            self.resolve()
        except (usage.UsageError, configfile.ConfigError, AddressError) as e:
            # twistd would print its whole usage text; one line is clearer.
            raise SystemExit(f"callapi: error: {e}") from None

    def resolve(self) -> None:
        """
        Merge the YAML file and defaults into C{self}, then validate.

        @raise usage.UsageError: a bad value (with the option name).
        """
        file_values: dict[str, Any] = {}
        if self["config"]:
            file_values = configfile.load(self["config"], set(DEFAULTS) | {"demo", "manhole-allow-remote"})
        for name, default in DEFAULTS.items():
            if self.get(name) is None:
                self[name] = file_values.get(name, default)
        for flag in ("demo", "manhole-allow-remote"):
            value = file_values.get(flag)
            if value is None or self[flag]:
                continue
            if not isinstance(value, bool):
                raise usage.UsageError(
                    f"callapi.{flag.replace('-', '_')} in the config file must "
                    f"be true or false, not {value!r}"
                )
            self[flag] = value
        self["mi-timeout"] = _positive_float("mi-timeout", self["mi-timeout"])
        for name in (
            "hold-timeout",
            "ring-timeout",
            "transfer-start-timeout",
            "transfer-timeout",
            "callee-ring-timeout",
            "hangup-deadline",
        ):
            self[name] = _positive_float(name, self[name])
        self["event-expire"] = _positive_int("event-expire", self["event-expire"])
        for name in (
            "probe-interval",
            "probe-interval-down",
            "probe-timeout",
            "registry-sweep",
            "registry-linger",
        ):
            self[name] = _positive_float(name, self[name])
        self["registry-cap"] = _positive_int("registry-cap", self["registry-cap"])
        self["mi-retries"] = _whole_number("mi-retries", self["mi-retries"])
        self["max-message-size"] = _positive_int("max-message-size", self["max-message-size"])
        path = str(self["path"])
        if not path.startswith("/"):
            raise usage.UsageError("--path must start with /")
        self["path"] = path
        self["listen"] = str(self["listen"]).replace("interface=localhost", "interface=127.0.0.1")
        if not self["demo"]:
            parse_address(str(self["mi"]), "--mi")
        if self["events"]:
            parse_address(str(self["events"]), "--events", allow_port_zero=True)
        level = str(self["log-level"]).lower()
        if level == "warning":
            level = "warn"
        if level not in LOG_LEVELS:
            raise usage.UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        self["log-level"] = level
        if self["sip-uri"]:
            from callapi.validation import RPCError, sip_uri

            try:
                sip_uri("--sip-uri", str(self["sip-uri"]))
            except RPCError as e:
                raise usage.UsageError(str(e.data)) from None
        if self["manhole"]:
            from callapi.manhole import check_manhole_options

            check_manhole_options(self)

    def settings(self) -> Settings:
        """
        The resolved options as L{Settings} (after L{resolve}).
        """
        return Settings(
            listen=self["listen"],
            path=self["path"],
            mi=str(self["mi"]),
            events=self["events"] or None,
            mi_timeout=self["mi-timeout"],
            event_expire=self["event-expire"],
            events_from=_comma_list(self["events-from"]),
            mi_retries=self["mi-retries"],
            probe_interval=self["probe-interval"],
            probe_interval_down=self["probe-interval-down"],
            probe_timeout=self["probe-timeout"],
            registry_sweep=self["registry-sweep"],
            registry_linger=self["registry-linger"],
            registry_cap=self["registry-cap"],
            max_message_size=self["max-message-size"],
            allow_origin=_comma_list(self["allow-origin"]),
            log_level=self["log-level"],
            log_file=self["log-file"] or None,
            demo=bool(self["demo"]),
            commands=attrs.evolve(
                _COMMANDS,
                next_hop=self["sip-uri"] or None,
                hold_timeout=self["hold-timeout"],
                ring_timeout=self["ring-timeout"],
                transfer_start_timeout=self["transfer-start-timeout"],
                transfer_timeout=self["transfer-timeout"],
                callee_ring_timeout=self["callee-ring-timeout"],
                hangup_deadline=self["hangup-deadline"],
            ),
        )


def _comma_list(value: Any) -> tuple[str, ...]:
    """
    A comma-separated option (or a YAML list) as a tuple of strings.
    """
    if not value:
        return ()
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _describe(error: BaseException) -> str:
    """
    A one-line description of a start-up error (some have an empty str()).
    """
    text = str(error).strip()
    return f"{error.__class__.__name__}: {text}" if text else repr(error)


class CallApiService(MultiService):
    """
    The root service.  A failure while starting (a port in use, an address
    that does not resolve) exits with one line instead of a traceback.
    """

    _log = logger()

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            raise SystemExit(f"callapi: cannot start: {_describe(e)}") from None

    def startService(self) -> None:
        try:
            super().startService()
        except Exception as e:
            raise SystemExit(f"callapi: cannot start: {_describe(e)}") from None


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the (unstarted) service tree for C{options}: the parts come from
    L{callapi.core}, built from C{options.settings()}.

    @raise SystemExit: one line, for a C{--listen} or manhole endpoint that
        cannot be parsed or a manhole host key that cannot be made.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from callapi.core import RunnerService, build_opensips, build_runner, build_websocket
    from callapi.logging import set_level

    settings = options.settings()
    set_level(settings.log_level)
    top = CallApiService()
    top.setName("callapi")
    if settings.log_file:
        from callapi.logging import LogFileService

        logfile = LogFileService(settings.log_file, settings.log_level)
        logfile.setName("logfile")
        logfile.setServiceParent(top)
    demo = None
    if settings.demo:
        from callapi.demo import DemoService

        demo = DemoService(reactor)
        demo.setName("demo")
        demo.setServiceParent(top)
        settings = attrs.evolve(settings, mi=demo.mi_address)
    opensips = build_opensips(settings, reactor)
    opensips.setName("opensips")
    opensips.setServiceParent(top)
    runner = build_runner(settings, opensips, reactor)
    commands = RunnerService(runner)
    commands.setName("commands")
    commands.setServiceParent(top)
    websocket = build_websocket(settings, runner, reactor)
    websocket.setName("websocket")
    websocket.setServiceParent(top)
    if options["manhole"]:
        from callapi.manhole import makeManholeService

        manhole = makeManholeService(options, top, reactor)
        manhole.setName("manhole")
        manhole.setServiceParent(top)
    if demo is not None:
        demo.walkthrough_after(websocket, settings.path)
    return top
