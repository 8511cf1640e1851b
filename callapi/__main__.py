"""
C{python -m callapi [options]}: the same as the C{callapi} command (see
L{callapi.cli.daemon}).
"""

from callapi.cli.daemon import main

if __name__ == "__main__":
    main(prog="python -m callapi")
