"""callapi: control SIP calls running through OpenSIPS over WebSocket JSON-RPC."""

#: The one place the version is written: setup.cfg reads it
#: (C{version = attr: callapi.__version__}), C{callapi --version} prints it.
__version__ = "0.1.0"


def version_text() -> str:
    """
    What C{callapi --version} prints: C{callapi X.Y.Z} on the first line,
    then the Twisted, Autobahn and Python versions it runs on, one a line
    (C{"Autobahn not installed"} when a distribution is missing).
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"callapi {__version__}"]
    for label, distribution in (("Twisted", "twisted"), ("Autobahn", "autobahn")):
        try:
            lines.append(f"{label} {version(distribution)}")
        except PackageNotFoundError:
            lines.append(f"{label} not installed")
    lines.append(f"Python {platform.python_version()}")
    return "\n".join(lines)
