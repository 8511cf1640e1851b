"""
Command-line tools: C{callapi} (the daemon in the foreground, as C{twistd -n
callapi}, L{callapi.cli.daemon}), C{callapi-client} (one command through a
running daemon's WebSocket, L{callapi.cli.client}) and C{callapi-cmd} (one
command straight against OpenSIPS, no daemon, L{callapi.cli.cmd}).  What the
last two share: L{callapi.cli.args} (exit codes, argument helpers, the
entry-point body) and L{callapi.cli.session} (the pure
L{CommandSession<callapi.cli.session.CommandSession>}).
"""
