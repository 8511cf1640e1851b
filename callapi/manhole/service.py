"""
The manhole service: listens with conch's SSH factory, closes every client
on stop, and L{makeManholeService} that builds it from the options.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from callapi.logging import logger
from callapi.manhole.console import conch_classes
from callapi.manhole.keys import AuditingKeyChecker, authorized_keys_db, key_fingerprint, load_host_key
from callapi.manhole.namespace import manhole_namespace
from callapi.manhole.options import is_loopback, require_conch

if TYPE_CHECKING:
    from twisted.conch.ssh.keys import Key
    from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint

#: Seconds L{ManholeService.stopService} waits for an SSH client to go away
#: before aborting its TCP connection.
STOP_TIMEOUT = 5.0


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

    _log = logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        reactor: Any,
        host_key: Key,
        key_dir: str,
        remove_key_dir: bool = False,
    ) -> None:
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
        fingerprint = key_fingerprint(self.host_key)
        if isinstance(address, (IPv4Address, IPv6Address)):
            self._log.info(
                "manhole listening on {host} port {port}, host key {fingerprint}",
                host=address.host,
                port=address.port,
                fingerprint=fingerprint,
            )
            if not is_loopback(address.host):
                self._log.warn(
                    "manhole bound to non-loopback address {host} port {port}: "
                    "anyone reaching it with an authorized key gets a Python prompt",
                    host=address.host,
                    port=address.port,
                )
        else:
            self._log.info(
                "manhole listening on {address}, host key {fingerprint}",
                address=address,
                fingerprint=fingerprint,
            )
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


def makeManholeService(options: Mapping[str, Any], root_service: Any, reactor: Any) -> ManholeService:
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
    require_conch()
    from twisted.conch.checkers import SSHPublicKeyChecker
    from twisted.conch.insults import insults
    from twisted.conch.manhole_ssh import ConchFactory, TerminalRealm
    from twisted.cred.portal import Portal
    from twisted.internet.endpoints import serverFromString

    classes = conch_classes()
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
        classes.ConsoleSession, clock=reactor
    )
    realm.chainedProtocolFactory = terminal  # type: ignore[assignment]
    keys_file = str(options["manhole-keys"])
    checker = SSHPublicKeyChecker(authorized_keys_db(keys_file))
    # TerminalRealm provides requestAvatar but Twisted does not declare IRealm on it.
    factory = ConchFactory(Portal(realm, [AuditingKeyChecker(checker, keys_file)]))  # type: ignore[arg-type]
    # Instance attributes: ConchFactory's class-level dicts are shared.
    # (ConchFactory annotates them as bytes; SSHFactory wants Key objects.)
    factory.publicKeys = {host_key.sshType(): host_key.public()}  # type: ignore[dict-item]
    factory.privateKeys = {host_key.sshType(): host_key}  # type: ignore[dict-item]
    return ManholeService(endpoint, factory, reactor, host_key, str(key_dir), remove_key_dir=remove_key_dir)
