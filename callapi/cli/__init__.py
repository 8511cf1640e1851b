"""
Command-line tools: C{callapi} (the daemon in the foreground, as C{twistd -n
callapi}), C{callapi-client} (one command through a running
daemon's WebSocket) and C{callapi-cmd} (one command straight against
OpenSIPS, no daemon).
"""
