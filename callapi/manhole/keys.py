"""
The manhole's keys: the OpenSSH C{authorized_keys} file (read again at every
login), the persistent ed25519 host key, and the login audit log.
Everything from C{twisted.conch} and C{cryptography} is imported inside
functions (the C{callapi[manhole]} extra).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from callapi.logging import logger

if TYPE_CHECKING:
    from twisted.conch.ssh.keys import Key

#: File name of the persistent SSH host key inside the key directory.
HOST_KEY_NAME = "ssh_host_ed25519_key"

_log = logger("callapi.manhole")


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


def key_fingerprint(key: Key) -> str:
    """
    C{key}'s OpenSSH-style fingerprint, C{SHA256:<base64 without padding>}
    (what C{ssh-keygen -l} shows).
    """
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
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        _log.info("manhole: created SSH host key {path}", path=path)
    return Key.fromFile(path)


@functools.cache
def _authorized_keys_file_class() -> Any:
    """
    The L{twisted.conch.checkers.IAuthorizedKeysDB} class, defined on
    first use (conch is optional).
    """
    from twisted.conch.checkers import IAuthorizedKeysDB

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
                _log.warn("manhole: cannot read {keys_file}: {error}", keys_file=self.path, error=e)
                return []

    return AuthorizedKeysFile


def authorized_keys_db(path: str) -> Any:
    """
    An C{IAuthorizedKeysDB} giving the keys of the C{authorized_keys} file
    at C{path} for any user name, read at every login (a bad or missing
    file logs a warning and allows nobody).
    """
    return _authorized_keys_file_class()(path)


@implementer(ICredentialsChecker)
class AuditingKeyChecker:
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
                fingerprint = key_fingerprint(Key.fromString(credentials.blob))
            except Exception:
                fingerprint = "?"
            return {
                "user": credentials.username.decode("utf-8", "replace"),
                "fingerprint": fingerprint,
                "keys_file": self._keys_file,
            }

        def accepted(avatar_id: Any) -> Any:
            _log.info("manhole login by {user} with key {fingerprint}", **describe())
            return avatar_id

        def refused(reason: Failure) -> Failure:
            _log.warn(
                "manhole login refused for {user} with key {fingerprint} (keys from {keys_file}): {error}",
                error=reason.getErrorMessage(),
                **describe(),
            )
            return reason

        return d.addCallbacks(accepted, refused)
