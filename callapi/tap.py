"""
C{twistd callapi}: command-line options and the service tree.

This is the only module that touches the global reactor (and only when
L{makeService} is not given one).  The tree, each child named:

  callapi (L{CallApiService})
    demo       the embedded OpenSIPS emulator (only with --demo)
    opensips   MI socket + event socket + subscriptions
    commands   stops running commands on shutdown
    websocket  the Autobahn WebSocket JSON-RPC server
    manhole    the SSH debugging console (only with --manhole)
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString

from callapi.logging import logger
from twisted.python import usage

from callapi import config as configfile
from callapi.opensips.addresses import AddressError, parse_address
from callapi.opensips.service import OpenSIPSService
from callapi.rpc import CommandRunner
from callapi.opensips.names import MINames
from callapi.scenarios import Context, Settings
from callapi.ws import CallApiFactory

DEFAULTS: dict[str, Any] = {
    "listen": "tcp:5059:interface=127.0.0.1",
    "path": "/call-api",
    "mi": "udp:127.0.0.1:8080",
    "events": None,
    "mi-timeout": 5.0,
    "event-expire": 120,
    "max-message-size": 1 << 20,
    "hold-timeout": 130.0,
    "ring-timeout": 60.0,
    "transfer-start-timeout": 15.0,
    "transfer-timeout": 130.0,
    "sip-uri": None,
    "log-level": "info",
    "log-file": None,
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


class Options(usage.Options):
    """
    Options of C{twistd callapi}.  Every option can also come from the YAML
    file given with C{--config} (see L{callapi.config}); the command line
    wins.  A bad value exits with one line on stderr and status 1.
    """

    synopsis = "[options]"
    longdesc = ("Control SIP calls running through OpenSIPS over WebSocket JSON-RPC. "
                "Use --demo to run against the built-in OpenSIPS emulator.")

    optParameters = [
        ["config", "c", None, "YAML configuration file (the Go Call API's call-api.yml keys work)"],
        ["listen", None, None, f"WebSocket server endpoint [default: {DEFAULTS['listen']}]"],
        ["path", None, None, f"HTTP path for WebSocket upgrades [default: {DEFAULTS['path']}]"],
        ["mi", None, None, f"OpenSIPS mi_datagram socket, udp:HOST:PORT or unix:/path "
                           f"[default: {DEFAULTS['mi']}]"],
        ["events", None, None, "where OpenSIPS sends EVI events, udp:IP:PORT or unix:/path "
                               "[default: an ephemeral UDP port on the address that reaches MI]"],
        ["mi-timeout", None, None, f"seconds to wait for an MI reply [default: {DEFAULTS['mi-timeout']}]"],
        ["event-expire", None, None, "event_subscribe expire, seconds; refreshed every "
                                     f"min(expire/3, 60) s [default: {DEFAULTS['event-expire']}]"],
        ["max-message-size", None, None, "largest WebSocket message accepted, bytes "
                                         f"[default: {DEFAULTS['max-message-size']}]"],
        ["hold-timeout", None, None, "seconds a CallHold/CallUnhold waits for every leg "
                                     f"[default: {DEFAULTS['hold-timeout']}]"],
        ["ring-timeout", None, None, "seconds CallStart lets the caller ring before cancelling "
                                     f"[default: {DEFAULTS['ring-timeout']}]"],
        ["transfer-start-timeout", None, None, "seconds to wait for E_CALL_TRANSFER start after a "
                                               "transfer was accepted "
                                               f"[default: {DEFAULTS['transfer-start-timeout']}]"],
        ["transfer-timeout", None, None, "seconds to wait for a started transfer's outcome "
                                         f"[default: {DEFAULTS['transfer-timeout']}]"],
        ["events-from", None, None, "comma-separated extra IPs EVI events may come from besides "
                                    "the MI address (multi-homed OpenSIPS); 'any' disables the check"],
        ["allow-origin", None, None, "comma-separated browser origins allowed to connect besides "
                                     "loopback and same-host pages (e.g. https://app.example.com); * = any"],
        ["sip-uri", None, None, "next hop (OpenSIPS' SIP URI) for click-to-dial INVITEs"],
        ["log-level", None, None, f"minimum level of callapi's log, one of {', '.join(LOG_LEVELS)} [default: info]"],
        ["log-file", None, None, "also write callapi's log to this file"],
        ["manhole", None, None, "SSH endpoint for the debugging console, e.g. tcp:2222:interface=127.0.0.1"],
        ["manhole-keys", None, None, "authorized_keys file for the manhole (no passwords)"],
        ["manhole-key-dir", None, None, "directory for the manhole's SSH host key [default: a temp dir]"],
    ]
    optFlags = [
        ["demo", None, "run against the built-in OpenSIPS EMULATOR (no OpenSIPS needed)"],
        ["manhole-allow-remote", None, "allow the manhole to bind a non-loopback address"],
    ]

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
            file_values = configfile.load(self["config"], set(DEFAULTS) | {"demo",
                                                                           "manhole-allow-remote"})
        for name, default in DEFAULTS.items():
            if self.get(name) is None:
                self[name] = file_values.get(name, default)
        for flag in ("demo", "manhole-allow-remote"):
            value = file_values.get(flag)
            if value is None or self[flag]:
                continue
            if not isinstance(value, bool):
                raise usage.UsageError(f"callapi.{flag.replace('-', '_')} in the config file must "
                                       f"be true or false, not {value!r}")
            self[flag] = value
        self["mi-timeout"] = _positive_float("mi-timeout", self["mi-timeout"])
        for name in ("hold-timeout", "ring-timeout", "transfer-start-timeout", "transfer-timeout"):
            self[name] = _positive_float(name, self[name])
        self["event-expire"] = _positive_int("event-expire", self["event-expire"])
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


class _RunnerService(Service):
    """
    Aborts running commands (with an Error) when the daemon stops.
    """

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    def stopService(self) -> None:
        super().stopService()
        self.runner.stop()


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the (unstarted) service tree for C{options}.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from callapi.logging import set_level

    set_level(options["log-level"])
    top = CallApiService()
    top.setName("callapi")
    if options["log-file"]:
        from callapi.logging import LogFileService

        logfile = LogFileService(options["log-file"], options["log-level"])
        logfile.setName("logfile")
        logfile.setServiceParent(top)
    names = MINames()
    opensips = OpenSIPSService(
        reactor, str(options["mi"]) if not options["demo"] else "udp:127.0.0.1:1",
        options["events"], mi_timeout=options["mi-timeout"],
        event_expire=options["event-expire"], names=names,
        events_from=_comma_list(options["events-from"]))
    opensips.setName("opensips")
    if options["demo"]:
        from callapi.demo import DemoService

        demo = DemoService(reactor, opensips)
        demo.setName("demo")
        demo.setServiceParent(top)
    opensips.setServiceParent(top)
    ctx = Context(mi=opensips.mi, events=opensips.hub, clock=reactor, names=names,
                  settings=Settings(
                      next_hop=options["sip-uri"] or None,
                      hold_timeout=options["hold-timeout"],
                      ring_timeout=options["ring-timeout"],
                      transfer_start_timeout=options["transfer-start-timeout"],
                      transfer_timeout=options["transfer-timeout"]))
    runner = CommandRunner(ctx)
    commands = _RunnerService(runner)
    commands.setName("commands")
    commands.setServiceParent(top)
    factory = CallApiFactory(runner, options["path"], options["max-message-size"], reactor=reactor,
                             allowed_origins=_comma_list(options["allow-origin"]))
    try:
        endpoint = serverFromString(reactor, options["listen"])
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"callapi: error: --listen {options['listen']!r}: {e}") from None
    websocket = StreamServerEndpointService(endpoint, factory)
    websocket._raiseSynchronously = True
    websocket.setName("websocket")
    websocket.setServiceParent(top)
    if options["manhole"]:
        from callapi.manhole import makeManholeService

        manhole = makeManholeService(options, top, reactor)
        manhole.setName("manhole")
        manhole.setServiceParent(top)
    if options["demo"] and "demo" in top.namedServices:
        top.getServiceNamed("demo").walkthrough_after(websocket, options["path"])
    return top
