"""
Command-line tools: C{callapi-client} (one command through a running
daemon's WebSocket, L{callapi.cli.client}) and C{callapi-cmd} (one command
straight against OpenSIPS, no daemon, L{callapi.cli.cmd}).  What both share:
L{callapi.cli.args} (exit codes, argument helpers) and
L{callapi.cli.session} (the pure L{CommandSession<callapi.cli.session.CommandSession>}).
"""
