"""
The manhole: an SSH debugging console giving an interactive Python prompt
inside the running daemon (C{--manhole ENDPOINT --manhole-keys FILE}).

Only public-key authentication is offered; the keys come from an OpenSSH
C{authorized_keys} file that is read again at every login, so adding or
removing a line takes effect without a restart.  The console binds a loopback
address unless C{--manhole-allow-remote} is given.  Connect with a terminal::

    ssh -p 2222 -i ~/.ssh/id_ed25519 127.0.0.1

The namespace (see L{manhole_namespace}) holds C{root}, C{services}, C{mi},
C{hub}, C{subscriptions()}, C{commands()} and C{reactor}.

Everything from C{twisted.conch} and C{cryptography} (the C{callapi[manhole]}
extra) is imported inside functions, so C{twistd callapi --help} works
without them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import tempfile
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import IServiceCollection, Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.conch.ssh.keys import Key
    from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint

#: File name of the persistent SSH host key inside the key directory.
HOST_KEY_NAME = "ssh_host_ed25519_key"

#: Seconds L{ManholeService.stopService} waits for an SSH client to go away
#: before aborting its TCP connection.
STOP_TIMEOUT = 5.0

_INSTALL_HINT = "pip install 'callapi[manhole]'"

BANNER = ("callapi manhole.  Names: root, services, mi, hub, subscriptions(), "
          "commands(), reactor.  Ctrl-D leaves.\n")

EXEC_REFUSED = (b"callapi manhole: this is an interactive Python console; "
                b"connect without a command (ssh -p PORT HOST)\r\n")

_log = Logger(namespace="callapi.manhole")


# -- options -----------------------------------------------------------------


def _require_conch() -> None:
    """
    @raise usage.UsageError: the C{callapi[manhole]} extra is not installed.
    """
    try:
        import cryptography  # noqa: F401
        import twisted.conch.manhole_ssh  # noqa: F401
        import twisted.conch.ssh.keys  # noqa: F401
    except ImportError as e:
        raise usage.UsageError(
            f"--manhole needs the conch extra: {_INSTALL_HINT} ({e})") from None


def _split_endpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split a server endpoint string the way L{serverFromString} does
    (C{:} separates fields, C{\\} escapes the next character).

    @return: (lower-cased endpoint type, positional fields, keyword fields).
    """
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for field in fields[1:]:
        name, equals, value = field.partition("=")
        if equals:
            kwargs[name] = value
        else:
            args.append(field)
    return fields[0].lower(), args, kwargs


def is_loopback(host: str) -> bool:
    """
    Whether C{host}, an IP address literal, is a loopback address
    (127.0.0.0/8, C{::1}, or 127/8 mapped into IPv6).  Names and unparsable
    text are not loopback.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _check_endpoint(options: Mapping[str, Any]) -> str:
    """
    Validate C{options["manhole"]}.

    @return: the endpoint string, with C{interface=localhost} rewritten to
        the loopback address.
    @raise usage.UsageError: not an endpoint we can listen on, or not bound
        to loopback while remote access is not allowed.
    """
    description = str(options["manhole"])
    allow_remote = bool(options.get("manhole-allow-remote"))
    kind, args, kwargs = _split_endpoint(description)
    if kind in ("tcp", "tcp6", "ssl"):
        port = args[0] if args else kwargs.get("port")
        try:
            if port is None or not 0 <= int(port) <= 65535:
                raise ValueError(port)
        except ValueError:
            raise usage.UsageError(
                f"--manhole {description!r}: needs a port number, e.g. "
                "tcp:2222:interface=127.0.0.1") from None
        interface = kwargs.get("interface")
        if interface == "localhost":
            loopback = "\\:\\:1" if kind == "tcp6" else "127.0.0.1"
            description = description.replace("interface=localhost", f"interface={loopback}")
            interface = "::1" if kind == "tcp6" else "127.0.0.1"
        if allow_remote:
            return description
        if interface is None:
            raise usage.UsageError(
                f"--manhole {description!r} binds every address; add interface=127.0.0.1 "
                "(or pass --manhole-allow-remote)")
        if not is_loopback(interface):
            raise usage.UsageError(
                f"--manhole {description!r} binds {interface}, not a loopback address "
                "(pass --manhole-allow-remote to allow it)")
        return description
    if kind == "unix":
        if not (args or kwargs.get("address")):
            raise usage.UsageError(f"--manhole {description!r}: needs a socket path")
        return description  # not reachable from the network
    if allow_remote:
        return description
    raise usage.UsageError(
        f"--manhole {description!r}: cannot tell whether a {kind!r} endpoint binds only "
        "loopback; use tcp:PORT:interface=127.0.0.1 (or pass --manhole-allow-remote)")


def read_authorized_keys(path: str) -> tuple[list[Key], list[int]]:
    """
    Parse an OpenSSH C{authorized_keys} file.

    Blank lines and C{#} comments are skipped.  Lines with an options prefix
    (C{from="..." ssh-ed25519 ...}) are not understood by conch and count as
    bad lines.

    @param path: the file.
    @return: (the public keys, 1-based numbers of the lines that are not a
        parsable public key).
    @raise OSError: the file cannot be read.
    """
    from twisted.conch.ssh.keys import BadKeyError, Key

    found: list[Key] = []
    bad: list[int] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                key = Key.fromString(line)
            except (BadKeyError, ValueError, IndexError, TypeError):
                bad.append(number)
                continue
            if key.isPublic():
                found.append(key)
            else:
                bad.append(number)
    return found, bad


def check_manhole_options(options: Mapping[str, Any]) -> None:
    """
    Validate the manhole options; called from C{Options.resolve()} when
    C{--manhole} is set.

    @param options: the C{Options} (any mutable mapping) with the keys
        C{manhole} (server endpoint string), C{manhole-keys} (path of an
        C{authorized_keys} file), C{manhole-key-dir} (path or C{None}) and
        C{manhole-allow-remote} (bool).  C{options["manhole"]} may be
        rewritten (C{interface=localhost} becomes the loopback address).
    @raise usage.UsageError: one line: the conch extra is missing; the
        endpoint is not loopback and remote access is not allowed; the keys
        file is missing, unreadable or holds no public key; the key directory
        is not a directory.
    """
    _require_conch()
    description = _check_endpoint(options)
    if description != options["manhole"]:
        options["manhole"] = description  # type: ignore[index]
    keys_file = options.get("manhole-keys")
    if not keys_file:
        raise usage.UsageError(
            "--manhole needs --manhole-keys, an authorized_keys file (there are no passwords)")
    try:
        found, bad = read_authorized_keys(str(keys_file))
    except OSError as e:
        raise usage.UsageError(f"--manhole-keys {keys_file}: {e.strerror or e}") from None
    if not found:
        raise usage.UsageError(f"--manhole-keys {keys_file}: holds no parsable public key")
    if bad:
        _log.warn("manhole: ignoring lines {lines} of {keys_file}: not a public key",
                  lines=bad, keys_file=keys_file)
    key_dir = options.get("manhole-key-dir")
    if key_dir and os.path.exists(key_dir) and not os.path.isdir(key_dir):
        raise usage.UsageError(f"--manhole-key-dir {key_dir}: not a directory")


# -- the namespace -------------------------------------------------------------


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
            lines.append(f"{key!r}: {getattr(command, 'method', '?')} "
                         f"cmd_id={getattr(command, 'cmd_id', '?')!r} "
                         f"state={getattr(command, 'state', '?')!r} "
                         f"outstanding={outstanding!r}")
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
        (the EventHub: C{.stats}, C{.registrations}), C{None} without an
        C{opensips} child; C{subscriptions()}, the current
        SubscriptionManager (C{None} before start); C{commands()}, a
        L{CommandTable} snapshot of the CommandRunner's running commands
        (empty without a C{commands} child); C{reactor}.
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

    return {
        "root": root,
        "services": types.MappingProxyType(root.namedServices),
        "mi": getattr(opensips, "mi", None),
        "hub": getattr(opensips, "hub", None),
        "subscriptions": subscriptions,
        "commands": commands,
        "reactor": reactor,
    }


# -- SSH plumbing (conch imported lazily) -----------------------------------------


def _fingerprint(key: Key) -> str:
    from twisted.conch.ssh.keys import FingerprintFormats

    return "SHA256:" + str(key.fingerprint(FingerprintFormats.SHA256_BASE64)).rstrip("=")


def load_host_key(key_dir: str) -> Key:
    """
    Load the manhole's ed25519 SSH host key from C{key_dir}, creating the
    directory (mode 0700) and the key (mode 0600, OpenSSH format) when missing.

    @return: the private L{twisted.conch.ssh.keys.Key}.
    @raise OSError: the directory or key cannot be created or read.
    @raise twisted.conch.ssh.keys.BadKeyError: the existing file is not a key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from twisted.conch.ssh.keys import Key

    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    path = os.path.join(key_dir, HOST_KEY_NAME)
    if not os.path.exists(path):
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        _log.info("manhole: created SSH host key {path}", path=path)
    return Key.fromFile(path)


@functools.cache
def _conch_classes() -> types.SimpleNamespace:
    """
    The classes that subclass conch, defined on first use.
    """
    from twisted.conch.checkers import IAuthorizedKeysDB
    from twisted.conch.interfaces import IConchUser
    from twisted.conch.manhole import ColoredManhole
    from twisted.conch.manhole_ssh import TerminalSession
    from twisted.internet.error import ProcessTerminated

    @implementer(IAuthorizedKeysDB)
    class AuthorizedKeysFile:
        """
        The keys of one authorized_keys file, for any user name, read at
        every login.
        """

        def __init__(self, path: str) -> None:
            self.path = path

        def getAuthorizedKeys(self, avatarId: bytes) -> list[Key]:
            try:
                return read_authorized_keys(self.path)[0]
            except OSError as e:
                _log.warn("manhole: cannot read {keys_file}: {error}",
                          keys_file=self.path, error=e)
                return []

    class ConsoleSession(TerminalSession):  # type: ignore[misc]
        """
        A terminal session that works without a pty request (80x24), follows
        window changes and closes on EOF.  An C{exec} request (C{ssh HOST
        COMMAND}) gets a line on stderr and exit status 1.
        """

        width, height = 80, 24
        _terminal: Any = None
        _closed = False

        def __init__(self, original: Any, clock: Any) -> None:
            super().__init__(original)
            self._clock = clock

        def getPty(self, term: bytes, windowSize: tuple[int, ...], attrs: Any) -> None:
            self._resize(windowSize)

        def _resize(self, windowSize: tuple[int, ...]) -> None:
            rows, columns = windowSize[:2]
            if rows > 0 and columns > 0:  # ssh -tt without a terminal sends 0x0
                self.height, self.width = rows, columns

        def openShell(self, proto: Any) -> None:
            self._terminal = self.transportFactory(
                proto, self.chainedProtocolFactory(), IConchUser(self.original),
                self.width, self.height)

        def execCommand(self, proto: Any, cmd: bytes) -> None:
            def refuse() -> None:
                if not self._closed:
                    proto.errReceived(EXEC_REFUSED)
                    proto.processEnded(Failure(ProcessTerminated(exitCode=1)))

            # After the reply to the exec request has been sent.
            self._clock.callLater(0, refuse)

        def windowChanged(self, newWindowSize: tuple[int, ...]) -> None:
            self._resize(newWindowSize)
            if self._terminal is not None:
                self._terminal.chainedProtocol.terminalProtocol.terminalSize(
                    self.width, self.height)

        def eofReceived(self) -> None:
            if self._terminal is not None:
                self._terminal.chainedProtocol.loseConnection()

        def closed(self) -> None:
            self._closed = True

    class Console(ColoredManhole):  # type: ignore[misc]
        """ColoredManhole that greets with L{BANNER}."""

        _greeted = False

        def terminalSize(self, width: int, height: int) -> None:
            # The first call (right after connecting) clears the screen.
            super().terminalSize(width, height)
            if not self._greeted:
                self._greeted = True
                self.addOutput(BANNER, isAsync=True)

    return types.SimpleNamespace(AuthorizedKeysFile=AuthorizedKeysFile,
                                 ConsoleSession=ConsoleSession, Console=Console)


@implementer(ICredentialsChecker)
class _AuditingKeyChecker:
    """
    Wraps an C{SSHPublicKeyChecker} to log every signed login attempt (user
    name and key fingerprint) as accepted (info) or refused (warn).
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, checker: ICredentialsChecker, keys_file: str) -> None:
        self._checker = checker
        self._keys_file = keys_file

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        d: Deferred[Any] = maybeDeferred(self._checker.requestAvatarId, credentials)
        if not credentials.signature:
            return d  # the "would this key do?" probe

        def describe() -> dict[str, Any]:
            from twisted.conch.ssh.keys import Key

            try:
                fingerprint = _fingerprint(Key.fromString(credentials.blob))
            except Exception:
                fingerprint = "?"
            return {"user": credentials.username.decode("utf-8", "replace"),
                    "fingerprint": fingerprint, "keys_file": self._keys_file}

        def accepted(avatar_id: Any) -> Any:
            _log.info("manhole login by {user} with key {fingerprint}", **describe())
            return avatar_id

        def refused(reason: Failure) -> Failure:
            _log.warn("manhole login refused for {user} with key {fingerprint} "
                      "(keys from {keys_file}): {error}",
                      error=reason.getErrorMessage(), **describe())
            return reason

        return d.addCallbacks(accepted, refused)


class _TrackedWrapper(ProtocolWrapper):
    """
    Tells its factory once the wrapped SSH transport has handled the loss
    (L{ProtocolWrapper} unregisters itself before that).
    """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.connection_gone(self)


class _TrackingFactory(WrappingFactory):
    """
    Keeps the live connections so that stopping the service can close them.
    """

    protocol = _TrackedWrapper
    noisy = False  # ManholeService logs the address itself

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._gone: dict[Any, Deferred[None]] = {}

    def connection_gone(self, p: Any) -> None:
        """
        Called by L{_TrackedWrapper} after the connection is completely lost.
        """
        d = self._gone.pop(p, None)
        if d is not None and not d.called:
            d.callback(None)

    def close_all(self, clock: Any, timeout: float) -> Deferred[Any]:
        """
        Disconnect every client (SSH DISCONNECT, then TCP close); abort the
        TCP connections still open after C{timeout} seconds.

        @return: fires when all are gone.
        """
        waits = []
        for wrapper in list(self.protocols):
            def abort(_: Deferred[None], wrapper: Any = wrapper) -> None:
                wrapper.transport.abortConnection()

            d: Deferred[None] = Deferred(abort)
            self._gone[wrapper] = d
            waits.append(d.addTimeout(timeout, clock).addErrback(lambda _: None))
            wrapper.wrappedProtocol.loseConnection()
        return gatherResults(waits)


class ManholeService(Service):
    """
    Listens on an endpoint with the manhole's SSH factory; stopping closes
    the port, disconnects every client and removes a temporary key directory.

    @ivar port: the listening port once started, else C{None}.
    @ivar host_key: the SSH host key (private L{twisted.conch.ssh.keys.Key}).
    @ivar key_dir: the directory holding the host key.
    """

    _log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any, reactor: Any,
                 host_key: Key, key_dir: str, remove_key_dir: bool = False) -> None:
        self._endpoint = endpoint
        self._factory = _TrackingFactory(factory)
        self._reactor = reactor
        self.host_key = host_key
        self.key_dir = key_dir
        self._remove_key_dir = remove_key_dir
        self.port: IListeningPort | None = None
        self._listening: Deferred[Any] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []
        self._failure: Failure | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def when_listening(self) -> Deferred[IListeningPort]:
        """
        @return: fires with the L{IListeningPort} once listening, or fails
            with the reason listening failed.
        """
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred[IListeningPort] = Deferred()
        self._waiters.append(d)
        return d

    def _listen(self) -> None:
        """
        Start listening (once).

        @raise Exception: listening failed at once (e.g. the port is in use),
            so that the root service exits with one line.
        """
        if self._listening is not None:
            return
        self._failure = None
        immediate: list[Failure] = []
        starting = True

        def failed(reason: Failure) -> None:
            self._listening = None
            self._failure = reason
            self._notify(reason)
            if starting:
                immediate.append(reason)
            else:
                self._log.error("manhole cannot listen: {error}", error=reason.value)

        self._listening = self._endpoint.listen(self._factory)
        self._listening.addCallbacks(self._listened, failed)
        starting = False
        if immediate:
            immediate[0].raiseException()

    def _listened(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        fingerprint = _fingerprint(self.host_key)
        if isinstance(address, (IPv4Address, IPv6Address)):
            self._log.info("manhole listening on {host} port {port}, host key {fingerprint}",
                           host=address.host, port=address.port, fingerprint=fingerprint)
            if not is_loopback(address.host):
                self._log.warn("manhole bound to non-loopback address {host} port {port}: "
                               "anyone reaching it with an authorized key gets a Python prompt",
                               host=address.host, port=address.port)
        else:
            self._log.info("manhole listening on {address}, host key {fingerprint}",
                           address=address, fingerprint=fingerprint)
        self._notify(port)

    def _notify(self, result: IListeningPort | Failure) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def stopService(self) -> Deferred[Any]:
        """
        Stop listening and disconnect every client.

        @return: fires once the port is closed and every client is gone.
        """
        super().stopService()
        waits: list[Deferred[Any]] = []
        if self._listening is not None and not self._listening.called:
            self._listening.cancel()
        self._listening = None
        if self.port is not None:
            port, self.port = self.port, None
            waits.append(maybeDeferred(port.stopListening))
        waits.append(self._factory.close_all(self._reactor, STOP_TIMEOUT))
        if self._remove_key_dir:
            self._remove_key_dir = False
            shutil.rmtree(self.key_dir, ignore_errors=True)
        return gatherResults(waits).addCallback(lambda _: None)


def makeManholeService(options: Mapping[str, Any], root_service: Any,
                       reactor: Any) -> ManholeService:
    """
    Build the (unstarted) manhole service.

    @param options: validated by L{check_manhole_options}: C{manhole} (SSH
        server endpoint string), C{manhole-keys} (authorized_keys path),
        C{manhole-key-dir} (host key directory, or C{None} for a fresh
        temporary directory removed when the service stops).
    @param root_service: the root C{MultiService}; see L{manhole_namespace}.
    @param reactor: used for the endpoint, timeouts and the C{reactor} name.
    @return: a L{ManholeService}; its host key already exists on disk.
    @raise SystemExit: one line: the endpoint string is invalid or the host
        key cannot be created or read.
    @raise usage.UsageError: the C{callapi[manhole]} extra is missing.
    """
    _require_conch()
    from twisted.conch.checkers import SSHPublicKeyChecker
    from twisted.conch.insults import insults
    from twisted.conch.manhole_ssh import ConchFactory, TerminalRealm
    from twisted.cred.portal import Portal
    from twisted.internet.endpoints import serverFromString

    classes = _conch_classes()
    key_dir = options.get("manhole-key-dir")
    remove_key_dir = not key_dir
    try:
        if not key_dir:
            key_dir = tempfile.mkdtemp(prefix="callapi-manhole-")
        host_key = load_host_key(str(key_dir))
    except Exception as e:
        raise SystemExit(f"callapi: error: --manhole-key-dir {key_dir}: {e}") from None
    try:
        endpoint = serverFromString(reactor, str(options["manhole"]))
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"callapi: error: --manhole {options['manhole']!r}: {e}") from None

    namespace = manhole_namespace(root_service, reactor)
    console: Callable[[], Any] = classes.Console

    def terminal() -> Any:
        return insults.ServerProtocol(console, dict(namespace))

    realm = TerminalRealm()
    realm.sessionFactory = functools.partial(  # type: ignore[assignment]
        classes.ConsoleSession, clock=reactor)
    realm.chainedProtocolFactory = terminal  # type: ignore[assignment]
    keys_file = str(options["manhole-keys"])
    checker = SSHPublicKeyChecker(classes.AuthorizedKeysFile(keys_file))
    # TerminalRealm provides requestAvatar but Twisted does not declare IRealm on it.
    factory = ConchFactory(Portal(realm, [_AuditingKeyChecker(checker, keys_file)]))  # type: ignore[arg-type]
    # Instance attributes: ConchFactory's class-level dicts are shared.
    # (ConchFactory annotates them as bytes; SSHFactory wants Key objects.)
    factory.publicKeys = {host_key.sshType(): host_key.public()}  # type: ignore[dict-item]
    factory.privateKeys = {host_key.sshType(): host_key}  # type: ignore[dict-item]
    return ManholeService(endpoint, factory, reactor, host_key, str(key_dir),
                          remove_key_dir=remove_key_dir)
