"""
C{python -m bench} (from the repository root): the same as C{bench/bench.py}.
"""

import sys

from bench.cli import main

sys.exit(main())
