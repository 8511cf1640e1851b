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

from callapi.manhole.console import BANNER, EXEC_REFUSED
from callapi.manhole.keys import HOST_KEY_NAME, load_host_key, read_authorized_keys
from callapi.manhole.namespace import CommandTable, manhole_namespace
from callapi.manhole.options import check_manhole_options, is_loopback
from callapi.manhole.service import STOP_TIMEOUT, ManholeService, makeManholeService

__all__ = [
    "BANNER",
    "EXEC_REFUSED",
    "HOST_KEY_NAME",
    "STOP_TIMEOUT",
    "CommandTable",
    "ManholeService",
    "check_manhole_options",
    "is_loopback",
    "load_host_key",
    "makeManholeService",
    "manhole_namespace",
    "read_authorized_keys",
]
