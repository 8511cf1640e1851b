"""
Load benchmark of the callapi daemon against the OpenSIPS emulator.

Everything runs as separate processes on 127.0.0.1 only::

    bench/bench.py (orchestrator, plain Python, no reactor)
      |- python -m callapi.emulator --mi udp:127.0.0.1:0 --delay-scale 0 ...
      |- python -m twisted callapi --listen tcp:PORT:interface=127.0.0.1 --mi udp:...
      `- bench/bench.py --worker ... (x --client-procs): Twisted WebSocket clients

Run it from anywhere; the daemon and emulator come from this repository's
working tree, or from C{--source DIR}::

    python bench/bench.py --scenario all

This script only puts the repository on C{sys.path} and runs L{bench.cli};
bench/README.md describes the scenarios, options and output, and
docs/benchmarks.md the current figures.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The repository, not this script's directory, goes first on sys.path: "bench"
# is then the package, and its modules (cli, load, report...) are not top-level.
if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
    sys.path[0] = REPO
elif REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench.cli import main  # noqa: E402 (needs the sys.path set up above)

if __name__ == "__main__":
    sys.exit(main())
