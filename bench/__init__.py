"""
Load benchmark of the callapi daemon against the OpenSIPS emulator
(bench/README.md).

The orchestrator (L{bench.cli}, L{bench.runner}) starts the processes and
reads /proc (L{bench.processes}) and prints the figures (L{bench.report}).
The load processes (L{bench.worker}) run the closed loops of commands
(L{bench.load}, L{bench.scenarios}) over their own WebSocket client
(L{bench.wsclient}).  None of it imports the daemon: the daemon and the
emulator run as separate processes from a source tree (C{--source}).
"""
