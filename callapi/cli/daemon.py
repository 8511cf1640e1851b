"""
The C{callapi} console script (and C{python -m callapi}): runs the daemon
in the foreground, exactly as C{twistd --nodaemon callapi [options]} does
(same options, same service tree from L{callapi.tap}, log to stdout), but
without a C{twistd.pid} file: a foreground program needs none, and two
of them may run from one directory, without the user having to know
that twistd's own options go before the plugin name and callapi's after.

Synopsis::

    callapi [--version | --help | callapi options ...]

C{--version} prints L{callapi.version_text} and exits 0.  A bad option
exits 1 with one line on stderr (as the daemon's own option checks do).
twistd's options (C{--pidfile}, C{--logfile}, C{--reactor}, C{--uid}, ...)
are not available here: use C{twistd [twistd options] callapi [options]}.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from twisted.application.service import ServiceMaker
from twisted.python import usage

from callapi import version_text

#: The twistd plugin's name (C{twisted/plugins/callapi_plugin.py}).
PLUGIN = "callapi"

#: The same ServiceMaker as the twistd plugin, used directly: the C{callapi}
#: command does not depend on Twisted's plugin scan (C{dropin.cache}, the
#: layout of C{sys.path}) finding C{twisted/plugins/callapi_plugin.py}.
SERVICE_MAKER = ServiceMaker(
    PLUGIN, "callapi.tap", "Control SIP calls through OpenSIPS over WebSocket JSON-RPC", PLUGIN
)


def server_options(prog: str = "callapi") -> usage.Options:
    """
    twistd's own L{ServerOptions<twisted.scripts.twistd.ServerOptions>},
    knowing only the callapi plugin, whose C{--help} says C{Usage: PROG
    [options]}.

    @param prog: the command as the user typed it, ending in C{callapi}
        (C{"callapi"}, C{"python -m callapi"}).
    """
    from twisted.scripts.twistd import ServerOptions

    class DaemonOptions(ServerOptions):
        # The plugin's usage line is "<this> callapi [options]".
        synopsis = ("Usage: " + prog.removesuffix(PLUGIN)).rstrip()

        @staticmethod
        def _getPlugins(interface: Any, package: Any = None) -> Iterable[Any]:
            return [SERVICE_MAKER]

    return DaemonOptions()


def main(argv: Sequence[str] | None = None, prog: str = "callapi") -> NoReturn:
    """
    Console entry point: parse C{argv} as C{twistd --nodaemon callapi ARGV}
    would, then run the daemon until it stops.

    @param argv: arguments without the program name (default C{sys.argv[1:]}).
    @param prog: the command's name in messages and C{--help}.
    @raise SystemExit: always: 0 after C{--help}, C{--version} or a clean
        stop; 1 with one stderr line for a bad option.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        print(version_text())
        raise SystemExit(0)
    from twisted.scripts.twistd import runApp

    config = server_options(prog)
    try:
        config.parseOptions(["--nodaemon", "--pidfile=", PLUGIN, *args])
    except usage.UsageError as e:
        raise SystemExit(f"{prog}: error: {e} (see {prog} --help)") from None
    runApp(config)
    raise SystemExit(0)
