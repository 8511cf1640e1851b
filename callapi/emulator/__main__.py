"""C{python -m callapi.emulator --mi udp:127.0.0.1:8080 [--version 4.0]}: the emulator alone."""

import sys

from callapi.emulator.cli import main

sys.exit(main())
