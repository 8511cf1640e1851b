"""
L{callapi.config} (the Go tool's call-api.yml keys) and L{callapi.tap}
(C{Options} and the unstarted service tree of C{makeService}).

No service is started: C{MemoryReactor} has no C{listenUDP} (docs/testing.md,
"Pitfalls"), so the tree is only walked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService
from twisted.internet.testing import MemoryReactor, MemoryReactorClock

from callapi import config
from callapi.opensips.service import OpenSIPSService
from callapi.rpc import CommandRunner
from callapi.tap import DEFAULTS, Options, makeService
from callapi.ws import CallApiFactory

OPTION_NAMES = set(DEFAULTS) | {"demo", "manhole-allow-remote"}

#: OpenSIPS/call-api config/call-api.yml, with every key set
GO_CONFIG = """\
# The Call API configuration file
ws_server:
  host: 10.0.0.5
  port: 6060
  http_path: /api/ws
mi:
  url: 127.0.0.1:8088
sip:
  uri: sip:127.0.0.1:5060
log:
  file_path: /var/log/call-api.log
  level: DEBUG
"""


def write(tmp_path: Path, text: str, name: str = "call-api.yml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def usage_error(*args: str) -> str:
    with pytest.raises(SystemExit) as caught:
        parse(*args)
    message = caught.value.code
    assert isinstance(message, str)
    assert "\n" not in message and message.startswith("callapi: error: ")
    return message


# -- config.load -------------------------------------------------------------------


def test_go_config_maps_to_options(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, GO_CONFIG), OPTION_NAMES) == {
        "listen": "tcp:6060:interface=10.0.0.5",
        "path": "/api/ws",
        "mi": "127.0.0.1:8088",
        "sip-uri": "sip:127.0.0.1:5060",
        "log-file": "/var/log/call-api.log",
        "log-level": "DEBUG",
    }


def test_the_go_sample_file(tmp_path: Path) -> None:
    # config/call-api.yml of OpenSIPS/call-api as shipped
    sample = (
        "ws_server:\n  host: localhost\n  port: 5059\n  http_path: /call-api\n"
        "mi:\n  url: 127.0.0.1:8080\nlog:\n  #file_path: /var/log/call-api.log\n"
        "  level: INFO\n"
    )
    path = write(tmp_path, sample)
    assert config.load(path, OPTION_NAMES) == {
        "listen": "tcp:5059:interface=localhost",
        "path": "/call-api",
        "mi": "127.0.0.1:8080",
        "log-level": "INFO",
    }
    options = parse("--config", path)
    assert (options["listen"], options["path"], options["mi"], options["log-level"], options["log-file"]) == (
        "tcp:5059:interface=127.0.0.1",
        "/call-api",
        "127.0.0.1:8080",
        "info",
        None,
    )


@pytest.mark.parametrize(
    "ws, listen",
    [
        ("  host: 0.0.0.0\n", "tcp:5059:interface=0.0.0.0"),
        ("  port: 7000\n", "tcp:7000:interface=127.0.0.1"),
        ("  http_path: /x\n", None),
    ],
)
def test_partial_ws_server(tmp_path: Path, ws: str, listen: str | None) -> None:
    values = config.load(write(tmp_path, "ws_server:\n" + ws), OPTION_NAMES)
    assert values.get("listen") == listen


def test_callapi_section_sets_any_option(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "callapi:\n  mi_timeout: 2.5\n  hold-timeout: 60\n  demo: true\n  events: udp:127.0.0.1:9000\n",
    )
    assert config.load(path, OPTION_NAMES) == {
        "mi-timeout": 2.5,
        "hold-timeout": 60,
        "demo": True,
        "events": "udp:127.0.0.1:9000",
    }


@pytest.mark.parametrize("text", ["", "# only a comment\n", "mi:\n", "ws_server: ~\n"])
def test_empty_config(tmp_path: Path, text: str) -> None:
    assert config.load(write(tmp_path, text), OPTION_NAMES) == {}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("ws_server:\n  hots: localhost\n", "unknown key ws_server.hots"),
        ("mi:\n  url: x:1\n  timeout: 5\n", "unknown key mi.timeout"),
        ("database:\n  url: x\n", "unknown key database (expected ws_server, mi, sip, log, callapi)"),
        ("callapi:\n  bogus_option: 1\n", "unknown option callapi.bogus_option"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("mi: 127.0.0.1:8080\n", "mi must be a mapping"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, OPTION_NAMES)
    assert str(caught.value) == f"config file {path}: {problem}"
    # the same through the command line: one line, exit
    assert usage_error("--config", path) == f"callapi: error: config file {path}: {problem}"


@pytest.mark.parametrize(
    "text",
    [
        "ws_server:\n  host: [unclosed\n",
        "mi:\n  url: 127.0.0.1:8080\n log:\n   level: x\n",
        "mi: {url: \n",
        "\tmi:\n",
    ],
)
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, OPTION_NAMES)
    assert re.fullmatch(rf"config file {re.escape(path)}( line \d+)?: invalid YAML", str(caught.value)), str(
        caught.value
    )
    assert re.fullmatch(
        rf"callapi: error: config file {re.escape(path)}( line \d+)?: "
        "invalid YAML",
        usage_error("--config", path),
    )


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yml")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, OPTION_NAMES)
    assert str(caught.value) == f"cannot read config file {path}: No such file or directory"


# -- Options -------------------------------------------------------------------------


def test_defaults() -> None:
    options = parse()
    assert {name: options[name] for name in DEFAULTS} == DEFAULTS
    assert not options["demo"]


def test_config_file_fills_options(tmp_path: Path) -> None:
    options = parse("--config", write(tmp_path, GO_CONFIG))
    assert (
        options["listen"],
        options["path"],
        options["mi"],
        options["sip-uri"],
        options["log-level"],
        options["log-file"],
    ) == (
        "tcp:6060:interface=10.0.0.5",
        "/api/ws",
        "127.0.0.1:8088",
        "sip:127.0.0.1:5060",
        "debug",
        "/var/log/call-api.log",
    )
    assert options["mi-timeout"] == 5.0  # not in the file: default


def test_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GO_CONFIG + "callapi:\n  mi_timeout: 9\n  event_expire: 300\n")
    options = parse(
        "--config",
        path,
        "--listen",
        "tcp:5059:interface=127.0.0.1",
        "--path",
        "/cli",
        "--mi",
        "udp:10.1.1.1:8080",
        "--log-level",
        "error",
        "--mi-timeout",
        "1.5",
    )
    assert (
        options["listen"],
        options["path"],
        options["mi"],
        options["log-level"],
        options["mi-timeout"],
        options["event-expire"],
        options["sip-uri"],
    ) == (
        "tcp:5059:interface=127.0.0.1",
        "/cli",
        "udp:10.1.1.1:8080",
        "error",
        1.5,
        300,
        "sip:127.0.0.1:5060",
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mi-timeout", "abc"], "--mi-timeout must be a number of seconds, not 'abc'"),
        (["--mi-timeout", "0"], "--mi-timeout must be a positive number of seconds"),
        (["--mi-timeout", "-1"], "--mi-timeout must be a positive number of seconds"),
        (["--mi-timeout", "nan"], "--mi-timeout must be a positive number of seconds"),
        (["--mi-timeout", "inf"], "--mi-timeout must be a positive number of seconds"),
        (["--hold-timeout", "x"], "--hold-timeout must be a number of seconds, not 'x'"),
        (["--event-expire", "1.5"], "--event-expire must be a whole number, not '1.5'"),
        (["--event-expire", "0"], "--event-expire must be positive"),
        (["--max-message-size", "-5"], "--max-message-size must be positive"),
        (
            ["--mi", "tcp:127.0.0.1:8080"],
            "--mi: expected udp:HOST:PORT or unix:/path, got 'tcp:127.0.0.1:8080'",
        ),
        (["--mi", "udp:127.0.0.1:0"], "--mi: invalid port 0"),
        (["--mi", "udp:127.0.0.1:70000"], "--mi: invalid port 70000"),
        (["--mi", "unix:relative/path"], "--mi: unix socket path must be absolute: 'unix:relative/path'"),
        (["--mi", ""], "--mi: empty address"),
        (
            ["--events", "tcp:127.0.0.1:9000"],
            "--events: expected udp:HOST:PORT or unix:/path, got 'tcp:127.0.0.1:9000'",
        ),
        (["--path", "call-api"], "--path must start with /"),
        (["--log-level", "loud"], "--log-level must be one of debug, info, warn, error, critical"),
        (["--sip-uri", "alice"], "--sip-uri is not a valid SIP URI (e.g. sip:alice@example.com)"),
    ],
)
def test_bad_values_exit_with_one_line(args: list[str], message: str) -> None:
    assert usage_error(*args) == "callapi: error: " + message


@pytest.mark.parametrize(
    "level, expected",
    [
        ("DEBUG", "debug"),
        ("Info", "info"),
        ("warning", "warn"),
        ("WARN", "warn"),
        ("error", "error"),
        ("critical", "critical"),
    ],
)
def test_log_levels(level: str, expected: str) -> None:
    assert parse("--log-level", level)["log-level"] == expected


@pytest.mark.parametrize(
    "mi",
    ["udp:127.0.0.1:8080", "127.0.0.1:8080", "opensips:8080", "unix:/run/opensips/mi.sock", "udp:[::1]:8080"],
)
def test_mi_address_forms(mi: str) -> None:
    assert parse("--mi", mi)["mi"] == mi


def test_values_are_typed() -> None:
    options = parse(
        "--mi-timeout", "2", "--event-expire", "60", "--hold-timeout", "30", "--max-message-size", "65536"
    )
    assert (
        options["mi-timeout"],
        options["event-expire"],
        options["hold-timeout"],
        options["max-message-size"],
    ) == (2.0, 60, 30.0, 65536)


# -- makeService ---------------------------------------------------------------------


def walk(service: Any, depth: int = 0) -> list[tuple[int, Any]]:
    found = [(depth, service)]
    for child in getattr(service, "services", []):
        found.extend(walk(child, depth + 1))
    return found


def test_service_tree() -> None:
    reactor = MemoryReactorClock()  # the commands' clock (IReactorTime) too
    options = parse(
        "--mi",
        "udp:127.0.0.1:8088",
        "--mi-timeout",
        "3",
        "--event-expire",
        "90",
        "--hold-timeout",
        "45",
        "--path",
        "/api",
        "--max-message-size",
        "4096",
        "--listen",
        "tcp:6000:interface=127.0.0.1",
    )
    top = makeService(options, reactor=reactor)
    assert IService.providedBy(top) and top.name == "callapi"
    assert sorted(top.namedServices) == ["commands", "opensips", "websocket"]
    assert [s.name for s in top] == ["opensips", "commands", "websocket"]
    assert not any(service.running for _, service in walk(top))
    assert reactor.tcpServers == [] and reactor.unixServers == []

    opensips = top.getServiceNamed("opensips")
    assert isinstance(opensips, OpenSIPSService)
    assert str(opensips.mi_address) == "udp:127.0.0.1:8088"
    assert opensips.mi.timeout == 3.0 and opensips.event_expire == 90
    assert opensips.events_address is None and opensips.subscriptions is None

    runner = top.getServiceNamed("commands").runner
    assert isinstance(runner, CommandRunner)
    assert runner.ctx.mi is opensips.mi and runner.ctx.events is opensips.hub
    assert runner.ctx.clock is reactor
    assert runner.ctx.settings.hold_timeout == 45.0
    assert runner.running == {} and runner.accepting

    websocket = top.getServiceNamed("websocket")
    assert isinstance(websocket.factory, CallApiFactory)
    assert websocket.factory.runner is runner and websocket.factory.path == "/api"
    assert websocket.factory.maxMessagePayloadSize == 4096
    assert (websocket.endpoint._port, websocket.endpoint._interface) == (6000, "127.0.0.1")


def test_service_tree_from_the_go_config(tmp_path: Path) -> None:
    options = parse(
        "--config", write(tmp_path, GO_CONFIG.replace("/var/log/call-api.log", str(tmp_path / "log")))
    )
    top = makeService(options, reactor=MemoryReactor())
    websocket = top.getServiceNamed("websocket")
    assert (websocket.endpoint._port, websocket.endpoint._interface) == (6060, "10.0.0.5")
    assert websocket.factory.path == "/api/ws"
    assert str(top.getServiceNamed("opensips").mi_address) == "udp:127.0.0.1:8088"
    assert not (tmp_path / "log").exists()  # nothing started, nothing opened


def test_unix_mi_and_fixed_events() -> None:
    options = parse("--mi", "unix:/run/opensips/mi.sock", "--events", "udp:127.0.0.1:0")
    top = makeService(options, reactor=MemoryReactor())
    opensips = top.getServiceNamed("opensips")
    assert str(opensips.mi_address) == "unix:/run/opensips/mi.sock"
    assert str(opensips.events_address) == "udp:127.0.0.1:0"


def test_bad_listen_endpoint_exits_with_one_line() -> None:
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--listen", "tcp:notaport"), reactor=MemoryReactor())
    message = caught.value.code
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith("callapi: error: --listen 'tcp:notaport': ")


def test_every_child_service_is_named(tmp_path: Path) -> None:
    top = makeService(parse("--log-file", str(tmp_path / "callapi.log")), reactor=MemoryReactor())
    assert [s.name for s in top if not s.name] == []
    assert len(top.namedServices) == len(list(top))


def test_ipv6_ws_server_host(tmp_path: Path) -> None:
    options = parse("--config", write(tmp_path, "ws_server:\n  host: '::1'\n  port: 5059\n"))
    top = makeService(options, reactor=MemoryReactor())
    endpoint = top.getServiceNamed("websocket").endpoint
    assert (endpoint._port, endpoint._interface) == (5059, "::1")


def test_non_utf8_config_is_one_line_error(tmp_path: Any) -> None:
    from callapi.config import ConfigError, load

    path = tmp_path / "bad.yml"
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError) as caught:
        load(str(path), set())
    assert str(caught.value) == f"config file {path} is not UTF-8 text"


def test_flag_in_config_must_be_a_boolean(tmp_path: Any) -> None:
    """
    A quoted "false" must not switch a flag on (bool("false") is True).
    """
    path = tmp_path / "c.yml"
    path.write_text('callapi:\n  manhole_allow_remote: "false"\n')
    from callapi.tap import Options

    with pytest.raises(SystemExit) as caught:
        Options().parseOptions(["--config", str(path)])
    assert str(caught.value) == (
        "callapi: error: callapi.manhole_allow_remote in the config file must be true or false, not 'false'"
    )


def test_settings_are_the_single_source_of_defaults() -> None:
    """
    The option defaults, callapi-cmd's and the parts' come from one
    L{callapi.settings.Settings}.
    """
    from callapi.cli.cmd import CmdOptions
    from callapi.settings import DEFAULTS as SETTINGS
    from callapi.settings import Settings

    assert parse().settings() == Settings()
    assert CmdOptions("Echo").settings() == Settings()
    assert (DEFAULTS["mi-timeout"], DEFAULTS["event-expire"]) == (SETTINGS.mi_timeout, SETTINGS.event_expire)
    settings = parse(
        "--events-from",
        "10.0.0.1, 10.0.0.2",
        "--allow-origin",
        "https://a.example",
        "--sip-uri",
        "sip:10.0.0.9:5060",
        "--ring-timeout",
        "30",
    ).settings()
    assert settings.events_from == ("10.0.0.1", "10.0.0.2")
    assert settings.allow_origin == ("https://a.example",)
    assert (settings.commands.next_hop, settings.commands.ring_timeout) == ("sip:10.0.0.9:5060", 30.0)


def test_demo_tree_points_opensips_at_the_emulator() -> None:
    """
    The demo service is built with the emulator's MI address, and the
    opensips service with the same one (nothing is patched at start).
    """
    top = makeService(parse("--demo"), reactor=MemoryReactor())
    assert [s.name for s in top] == ["demo", "opensips", "commands", "websocket"]
    demo = top.getServiceNamed("demo")
    assert re.fullmatch(r"udp:127\.0\.0\.1:\d+", demo.mi_address)
    assert str(top.getServiceNamed("opensips").mi_address) == demo.mi_address


def test_when_listening_asked_before_start() -> None:
    reactor = MemoryReactor()
    top = makeService(parse("--listen", "tcp:6000:interface=127.0.0.1"), reactor=reactor)
    websocket = top.getServiceNamed("websocket")
    before = websocket.when_listening()
    assert not before.called
    websocket.privilegedStartService()
    ports: list[Any] = []
    before.addCallback(ports.append)
    websocket.when_listening().addCallback(ports.append)
    assert [p.getHost().port for p in ports] == [6000, 6000]
