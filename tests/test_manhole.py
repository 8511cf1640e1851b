"""
The manhole: option checks, the namespace, and a real SSH login over
loopback (pty + shell, as OpenSSH's C{ssh} does) that reads the running
commands from the REPL.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.application.service import MultiService, Service
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.endpoints import AuthenticationFailed, SSHCommandClientEndpoint
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.session import packRequest_pty_req, packRequest_window_change
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionClosed, ProcessTerminated
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from callapi import manhole
from callapi.manhole import (
    HOST_KEY_NAME,
    ManholeService,
    check_manhole_options,
    load_host_key,
    makeManholeService,
    manhole_namespace,
)

TIMEOUT = 5.0


@pytest.fixture
def reactor() -> Any:
    """The reactor pytest-twisted runs (kept local: no shared conftest)."""
    from twisted.internet import reactor as global_reactor

    return global_reactor


def write_key_pair(directory: Path, name: str) -> tuple[Key, Path]:
    """
    A fresh ed25519 key: (private conch Key, path of a one-line authorized_keys).
    """
    private = Ed25519PrivateKey.generate()
    openssh_private = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    openssh_public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    authorized = directory / f"{name}.authorized_keys"
    authorized.write_bytes(b"# a comment\n\n" + openssh_public + b" " + name.encode() + b"\n")
    return Key.fromString(openssh_private), authorized


@pytest.fixture
def user_key(tmp_path: Path) -> tuple[Key, Path]:
    return write_key_pair(tmp_path, "tester")


def options(
    authorized: Path | None,
    endpoint: str = "tcp:0:interface=127.0.0.1",
    key_dir: Path | None = None,
    allow_remote: bool = False,
) -> dict[str, Any]:
    return {
        "manhole": endpoint,
        "manhole-keys": str(authorized) if authorized else None,
        "manhole-key-dir": str(key_dir) if key_dir else None,
        "manhole-allow-remote": allow_remote,
    }


def usage_error(opts: dict[str, Any]) -> str:
    with pytest.raises(usage.UsageError) as info:
        check_manhole_options(opts)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- option checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:2222:interface=127.0.0.1",
        "tcp:2222:interface=127.1.2.3",
        "tcp6:2222:interface=\\:\\:1",
        "tcp:port=2222:interface=127.0.0.1",
        "unix:/tmp/callapi-manhole.sock",
    ],
)
def test_loopback_accepted(user_key: tuple[Key, Path], endpoint: str) -> None:
    opts = options(user_key[1], endpoint)
    check_manhole_options(opts)
    assert opts["manhole"] == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:2222:interface=10.1.2.3",
        "tcp:2222:interface=0.0.0.0",
        "tcp6:2222:interface=\\:\\:",
        "tcp:2222:interface=example.com",
    ],
)
def test_non_loopback_refused(user_key: tuple[Key, Path], endpoint: str) -> None:
    message = usage_error(options(user_key[1], endpoint))
    assert "not a loopback address" in message and "--manhole-allow-remote" in message


@pytest.mark.parametrize("endpoint", ["tcp:2222", "tcp6:2222", "tcp:port=2222"])
def test_tcp_without_interface_refused(user_key: tuple[Key, Path], endpoint: str) -> None:
    assert "binds every address" in usage_error(options(user_key[1], endpoint))


def test_unknown_endpoint_type_refused(user_key: tuple[Key, Path]) -> None:
    assert "cannot tell" in usage_error(options(user_key[1], "systemd:domain=INET:index=0"))
    check_manhole_options(options(user_key[1], "systemd:domain=INET:index=0", allow_remote=True))


@pytest.mark.parametrize("endpoint", ["tcp:2222:interface=10.1.2.3", "tcp:2222"])
def test_allow_remote_accepted(user_key: tuple[Key, Path], endpoint: str) -> None:
    check_manhole_options(options(user_key[1], endpoint, allow_remote=True))


def test_bad_port_refused(user_key: tuple[Key, Path]) -> None:
    assert "needs a port number" in usage_error(options(user_key[1], "tcp:ssh:interface=127.0.0.1"))


def test_localhost_becomes_loopback_address(user_key: tuple[Key, Path]) -> None:
    opts = options(user_key[1], "tcp:2222:interface=localhost")
    check_manhole_options(opts)
    assert opts["manhole"] == "tcp:2222:interface=127.0.0.1"


def test_keys_file_required(tmp_path: Path) -> None:
    assert "--manhole-keys" in usage_error(options(None))
    assert "No such file" in usage_error(options(tmp_path / "missing"))


@pytest.mark.parametrize("content", [b"", b"# only a comment\n\n", b"not a key at all\n"])
def test_keys_file_without_keys_refused(tmp_path: Path, content: bytes) -> None:
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_bytes(content)
    assert "no parsable public key" in usage_error(options(keys_file))


def test_private_key_is_not_an_authorized_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    assert "no parsable public key" in usage_error(options(keys_file))


def test_key_dir_must_be_a_directory(user_key: tuple[Key, Path], tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert "not a directory" in usage_error(options(user_key[1], key_dir=not_a_dir))


def test_missing_conch_extra(user_key: tuple[Key, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "twisted.conch.manhole_ssh", None)
    assert "pip install 'callapi[manhole]'" in usage_error(options(user_key[1]))


def test_tap_options_run_the_checks(user_key: tuple[Key, Path], tmp_path: Path) -> None:
    from twisted.internet.testing import MemoryReactor

    from callapi.tap import Options, makeService

    opts = Options()
    opts.parseOptions(
        [
            "--manhole",
            "tcp:0:interface=localhost",
            "--manhole-keys",
            str(user_key[1]),
            "--manhole-key-dir",
            str(tmp_path),
        ]
    )
    assert opts["manhole"] == "tcp:0:interface=127.0.0.1"
    service = makeService(opts, reactor=MemoryReactor()).getServiceNamed("manhole")
    assert isinstance(service, manhole.ManholeService)
    assert service.key_dir == str(tmp_path) and (tmp_path / HOST_KEY_NAME).exists()
    with pytest.raises(SystemExit, match="not a loopback"):
        Options().parseOptions(
            ["--manhole", "tcp:2222:interface=0.0.0.0", "--manhole-keys", str(user_key[1])]
        )


# -- host key and namespace --------------------------------------------------------


def test_host_key_created_once_and_private(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    first = load_host_key(str(key_dir))
    assert first.sshType() == b"ssh-ed25519" and not first.isPublic()
    assert stat.S_IMODE(os.stat(key_dir / HOST_KEY_NAME).st_mode) == 0o600
    assert load_host_key(str(key_dir)) == first


def test_temporary_key_dir_removed_on_stop(user_key: tuple[Key, Path], reactor: Any) -> None:
    service = makeManholeService(options(user_key[1]), MultiService(), reactor)
    assert os.path.exists(os.path.join(service.key_dir, HOST_KEY_NAME))
    service.stopService()
    assert not os.path.exists(service.key_dir)


class FakeCommand:
    method = "CallHold"
    cmd_id = "c-1"
    state = "waiting for legs"
    params = {"callid": "abc"}
    outstanding = {"subscriptions": 2, "timers": 1, "requests": 0}


class FakeOpenSIPS(Service):
    def __init__(self) -> None:
        self.mi = SimpleNamespace(
            pending={"17": ("dlg_list", None)}, stats={"sent": 3, "replies": 2, "timeouts": 0, "dropped": 0}
        )
        self.hub = SimpleNamespace(stats={"received": 0, "delivered": 0, "unrouted": 0}, registrations=0)
        self.subscriptions: Any = None


class FakeCommands(Service):
    def __init__(self) -> None:
        self.runner = SimpleNamespace(running={(1, "c-1"): FakeCommand()})


def fake_root() -> MultiService:
    root = MultiService()
    for name, child in (("opensips", FakeOpenSIPS()), ("commands", FakeCommands())):
        child.setName(name)
        child.setServiceParent(root)
    return root


def test_namespace(reactor: Any) -> None:
    root = fake_root()
    ns = manhole_namespace(root, reactor)
    opensips = root.getServiceNamed("opensips")
    assert ns["root"] is root and ns["reactor"] is reactor
    assert ns["mi"] is opensips.mi and ns["hub"] is opensips.hub
    assert ns["subscriptions"]() is None
    opensips.subscriptions = marker = object()
    assert ns["subscriptions"]() is marker
    assert dict(ns["services"]) == root.namedServices
    late = Service()
    late.setName("late")
    late.setServiceParent(root)
    assert ns["services"]["late"] is late
    running = ns["commands"]()
    assert list(running) == [(1, "c-1")] and running[1, "c-1"].method == "CallHold"
    assert "CallHold cmd_id='c-1' state='waiting for legs'" in repr(running)
    root.getServiceNamed("commands").runner.running.clear()
    assert ns["commands"]() == {} and repr(ns["commands"]()) == "{}"


def test_namespace_without_children(reactor: Any) -> None:
    ns = manhole_namespace(MultiService(), reactor)
    assert ns["mi"] is None and ns["subscriptions"]() is None and ns["commands"]() == {}


# -- a minimal interactive SSH client (what `ssh -p PORT 127.0.0.1` does) -------

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78DEHMc])")


class ShellChannel(SSHChannel):
    """A session channel with a pty and a shell; collects what it reads."""

    name = b"session"

    def __init__(self, opened: Deferred[ShellChannel], **kw: Any) -> None:
        super().__init__(**kw)
        self.opened = opened
        self.received = b""
        self._wait: tuple[int, tuple[bytes, ...], Deferred[bytes]] | None = None

    def openFailed(self, reason: Any) -> None:
        self.opened.errback(reason)

    def channelOpen(self, specificData: bytes) -> None:
        assert self.conn is not None
        pty = self.conn.sendRequest(
            self, b"pty-req", packRequest_pty_req(b"xterm", (24, 80, 0, 0), b""), wantReply=True
        )
        shell = self.conn.sendRequest(self, b"shell", b"", wantReply=True)
        pty.addCallback(lambda _: shell).addCallbacks(
            lambda _: self.opened.callback(self), self.opened.errback
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def expect(self, *needles: bytes, since: int = 0) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._wait = (since, needles, d)
        self._check()
        return d

    def _check(self) -> None:
        if self._wait is None:
            return
        since, needles, d = self._wait
        text = ANSI.sub(b"", self.received[since:])
        if all(needle in text for needle in needles):
            self._wait = None
            d.callback(text)


class ShellConnection(SSHConnection):
    def __init__(self, opened: Deferred[ShellChannel]) -> None:
        super().__init__()
        self.opened = opened

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.openChannel(ShellChannel(self.opened, conn=self))


class KeyAuth(SSHUserAuthClient):
    """Offers one key, once; no other method."""

    def __init__(self, user: bytes, instance: Any, key: Key) -> None:
        super().__init__(user, instance)
        self._key = key
        self._offered = False
        self.authenticated = False

    def getPublicKey(self) -> Key | None:
        if self._offered:
            return None
        self._offered = True
        return self._key.public()

    def getPrivateKey(self) -> Deferred[Key]:
        return succeed(self._key)

    def ssh_USERAUTH_SUCCESS(self, packet: bytes) -> None:
        self.authenticated = True
        super().ssh_USERAUTH_SUCCESS(packet)


class ClientTransport(SSHClientTransport):
    def __init__(self, host_key: Key, user_key: Key) -> None:
        self.host_key = host_key
        self.user_key = user_key
        self.opened: Deferred[ShellChannel] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.auth: KeyAuth | None = None

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        if hostKey == self.host_key.public().blob():
            return succeed(True)
        return fail(AssertionError("not the manhole's host key"))

    def connectionSecure(self) -> None:
        self.auth = KeyAuth(b"tester", ShellConnection(self.opened), self.user_key)
        self.requestService(self.auth)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if not self.opened.called:
            self.opened.errback(reason)
        self.lost.callback(None)


async def connect(reactor: Any, port: int, host_key: Key, user_key: Key) -> ClientTransport:
    factory = Factory()
    factory.buildProtocol = lambda addr: ClientTransport(host_key, user_key)  # type: ignore
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT).connect(factory)
    assert isinstance(client, ClientTransport)
    return client


async def listening_port(service: ManholeService) -> int:
    """The TCP port of the started C{service} (listening on 127.0.0.1)."""
    address = (await service.when_listening()).getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def log_events() -> tuple[list[dict[str, Any]], ILogObserver]:
    """A list and the log observer that appends every event to it."""
    events: list[dict[str, Any]] = []
    # any callable taking the event is an ILogObserver; mypy cannot see that
    return events, cast(ILogObserver, events.append)


def reactor_state(reactor: Any) -> tuple[set[Any], set[Any], set[Any]]:
    return set(reactor.getReaders()), set(reactor.getWriters()), set(reactor.getDelayedCalls())


@pytest_twisted.ensureDeferred
async def test_ssh_login_reads_running_commands(
    reactor: Any, user_key: tuple[Key, Path], tmp_path: Path
) -> None:
    before = reactor_state(reactor)
    events, observer = log_events()
    globalLogPublisher.addObserver(observer)
    service = makeManholeService(options(user_key[1], key_dir=tmp_path / "hostkey"), fake_root(), reactor)
    try:
        service.startService()
        port = await listening_port(service)
        client = await connect(reactor, port, load_host_key(str(tmp_path / "hostkey")), user_key[0])
        channel = await client.opened.addTimeout(TIMEOUT, reactor)
        assert client.auth is not None and client.auth.authenticated
        await channel.expect(b"callapi manhole", b">>> ").addTimeout(TIMEOUT, reactor)
        mark = len(channel.received)
        channel.write(b"commands()\r")
        text = await channel.expect(b"CallHold", b"c-1", b"waiting for legs", since=mark).addTimeout(
            TIMEOUT, reactor
        )
        assert b"(1, 'c-1'): CallHold" in text
        assert channel.conn is not None
        channel.conn.sendRequest(channel, b"window-change", packRequest_window_change((30, 100, 0, 0)))
        mark = len(channel.received)
        channel.write(b"mi.pending, hub.stats['received'], sorted(services)\r")
        await channel.expect(b"'dlg_list'", b"['commands', 'opensips']", since=mark).addTimeout(
            TIMEOUT, reactor
        )
        # stopping the service disconnects the client too
        await service.stopService()
        await client.lost.addTimeout(TIMEOUT, reactor)
    finally:
        globalLogPublisher.removeObserver(observer)
        if service.running:
            await service.stopService()
    formats = [e.get("log_format", "") for e in events]
    assert any(f.startswith("manhole listening on") for f in formats)
    assert any(f.startswith("manhole login by") for f in formats)
    assert not any(e.get("log_failure") for e in events)
    assert reactor_state(reactor) == before


@pytest_twisted.ensureDeferred
async def test_wrong_key_rejected(reactor: Any, user_key: tuple[Key, Path], tmp_path: Path) -> None:
    before = reactor_state(reactor)
    events, observer = log_events()
    globalLogPublisher.addObserver(observer)
    intruder, _ = write_key_pair(tmp_path, "intruder")
    service = makeManholeService(options(user_key[1], key_dir=tmp_path / "hostkey"), fake_root(), reactor)
    try:
        service.startService()
        port = await listening_port(service)
        client = await connect(reactor, port, service.host_key, intruder)
        with pytest.raises(ConnectionClosed):
            await client.opened.addTimeout(TIMEOUT, reactor)
        await client.lost.addTimeout(TIMEOUT, reactor)
        assert client.auth is not None and client.auth._offered
        assert not client.auth.authenticated
    finally:
        globalLogPublisher.removeObserver(observer)
        await service.stopService()
    refused = [e for e in events if e.get("log_format", "").startswith("manhole login refused")]
    assert refused and refused[0]["user"] == "tester"
    assert reactor_state(reactor) == before


class CommandOutput(Protocol):
    """The protocol of an SSHCommandClientEndpoint command; also notices when
    the SSH connection under it is completely gone."""

    def __init__(self) -> None:
        self.ended: Deferred[BaseException | None] = Deferred()
        self.ssh_lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        # conch's private _CommandTransport: its SSH connection and transport
        ssh = self.transport.conn.transport  # type: ignore[attr-defined]
        lost = ssh.connectionLost

        def connection_lost(reason: Failure) -> None:
            lost(reason)
            self.ssh_lost.callback(None)

        ssh.connectionLost = connection_lost

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended.callback(reason.value)


@pytest_twisted.ensureDeferred
async def test_exec_request_refused(reactor: Any, user_key: tuple[Key, Path], tmp_path: Path) -> None:
    """`ssh HOST COMMAND` logs in (SSHCommandClientEndpoint) but gets exit status 1."""
    before = reactor_state(reactor)
    service = makeManholeService(options(user_key[1], key_dir=tmp_path / "hostkey"), fake_root(), reactor)
    try:
        service.startService()
        port = await listening_port(service)
        known_hosts = str(tmp_path / "known_hosts")
        known = KnownHostsFile(FilePath(known_hosts))
        known.addHostKey(b"127.0.0.1", service.host_key.public())
        known.save()
        endpoint = SSHCommandClientEndpoint.newConnection(
            reactor,
            b"commands()",
            b"tester",
            b"127.0.0.1",
            port,
            keys=[user_key[0]],
            knownHosts=known_hosts,
            agentEndpoint=None,
        )
        output = await endpoint.connect(Factory.forProtocol(CommandOutput)).addTimeout(TIMEOUT, reactor)
        reason = await output.ended.addTimeout(TIMEOUT, reactor)
        assert isinstance(reason, ProcessTerminated) and reason.exitCode == 1
        await output.ssh_lost.addTimeout(TIMEOUT, reactor)
    finally:
        await service.stopService()
    assert reactor_state(reactor) == before


@pytest_twisted.ensureDeferred
async def test_wrong_key_rejected_by_command_endpoint(
    reactor: Any, user_key: tuple[Key, Path], tmp_path: Path
) -> None:
    intruder, _ = write_key_pair(tmp_path, "intruder")
    service = makeManholeService(options(user_key[1], key_dir=tmp_path / "hostkey"), fake_root(), reactor)
    try:
        service.startService()
        port = await listening_port(service)
        known_hosts = str(tmp_path / "known_hosts")
        known = KnownHostsFile(FilePath(known_hosts))
        known.addHostKey(b"127.0.0.1", service.host_key.public())
        known.save()
        endpoint = SSHCommandClientEndpoint.newConnection(
            reactor,
            b"commands()",
            b"tester",
            b"127.0.0.1",
            port,
            keys=[intruder],
            knownHosts=known_hosts,
            agentEndpoint=None,
        )
        with pytest.raises(AuthenticationFailed):
            await endpoint.connect(Factory.forProtocol(CommandOutput)).addTimeout(TIMEOUT, reactor)
    finally:
        await service.stopService()
