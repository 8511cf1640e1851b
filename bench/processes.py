"""
The orchestrator's child processes: the OpenSIPS emulator, the daemon and
the load processes, started from a callapi source tree; their CPU time,
memory and UDP drops read from /proc (Linux only).

Every child gets C{PR_SET_PDEATHSIG} (it dies with the bench, even by
SIGKILL) and the raised C{RLIMIT_NOFILE}; L{Processes.kill_all} stops them
newest first on every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from bench.wsclient import websocket_ready

#: the repository this bench belongs to (the default source tree)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the script the load processes run (C{--worker CONFIG})
BENCH_SCRIPT = os.path.join(REPO, "bench", "bench.py")

#: the emulator's module, newest first: trees before the package refactor
#: (17cfa83 and older) have it at callapi/testing/opensips.py
EMULATOR_MODULES = ("callapi.emulator", "callapi.testing.opensips")

#: the events the daemon subscribes to at start (callapi.opensips.events)
DAEMON_EVENTS = ("E_CALL_TRANSFER", "E_CALL_HOLD", "E_DLG_STATE_CHANGED")


class BenchError(Exception):
    """
    The benchmark could not run (a process did not start, a deadline passed).
    """


def log(message: str) -> None:
    """
    One progress line on stderr (the table or JSON goes to stdout).
    """
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def raise_nofile_limit() -> int:
    """
    Raise this process' soft RLIMIT_NOFILE to its hard limit (the idle
    scenario holds 10,000+ sockets).  Also run in every child (preexec_fn).

    @return: the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


try:
    import ctypes

    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    _LIBC = None

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """
    preexec_fn of every child: raise the fd limit, and ask Linux to SIGTERM
    the child if the bench process dies (even by SIGKILL).
    """
    raise_nofile_limit()
    if _LIBC is not None:
        try:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except Exception:
            pass


class Source:
    """
    The callapi source tree that the daemon and the emulator run from
    (C{--source}, default this repository): the children get
    C{PYTHONPATH=root} and run in C{root}, so its C{callapi} package and
    C{twisted/plugins/callapi_plugin.py} are what gets imported.

    @ivar root: absolute path of the tree.
    @ivar emulator_module: the module to run with C{python -m}, one of
        L{EMULATOR_MODULES}.
    """

    def __init__(self, root: str) -> None:
        """
        @raise BenchError: C{root} has no callapi daemon or no emulator.
        """
        self.root = os.path.abspath(root)
        if not os.path.exists(os.path.join(self.root, "twisted", "plugins", "callapi_plugin.py")):
            raise BenchError(f"{self.root}: not a callapi source tree (no twisted/plugins/callapi_plugin.py)")
        for name in EMULATOR_MODULES:
            path = os.path.join(self.root, *name.split("."))
            if os.path.exists(os.path.join(path, "__main__.py")) or os.path.exists(path + ".py"):
                self.emulator_module = name
                break
        else:
            raise BenchError(
                f"{self.root}: no OpenSIPS emulator (looked for " + ", ".join(EMULATOR_MODULES) + ")"
            )


class LineReader:
    """
    Non-blocking line reader over a pipe, for select() with deadlines.
    """

    def __init__(self, fileobj: Any) -> None:
        self.fd = fileobj.fileno()
        os.set_blocking(self.fd, False)
        self._buf = b""
        self.eof = False

    def lines(self) -> list[str]:
        """
        The complete lines that can be read now (sets C{eof} at the end).
        """
        out: list[str] = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buf += chunk
        *complete, self._buf = self._buf.split(b"\n")
        out.extend(line.decode(errors="replace").strip() for line in complete)
        return out


class Processes:
    """
    Every child process of one scenario; L{kill_all} is idempotent and runs
    on any exit path.
    """

    def __init__(self, tmpdir: str, source: Source) -> None:
        """
        @param tmpdir: where the process logs go.
        @param source: the tree the children run from.
        """
        self.tmpdir = tmpdir
        self.source = source
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, str] = {}

    def spawn(
        self, name: str, argv: list[str], *, log: bool = True, pipes: bool = False
    ) -> subprocess.Popen[bytes]:
        """
        Start C{argv} in the source tree, registered as C{name}.

        @param log: stdout and stderr go to C{TMPDIR/NAME.log}.
        @param pipes: stdin and stdout are pipes (the workers' line protocol).
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = self.source.root + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        stdout: Any = subprocess.DEVNULL
        stderr: Any = subprocess.DEVNULL
        if log:
            path = os.path.join(self.tmpdir, f"{name}.log")
            self.logs[name] = path
            logf = open(path, "ab")
            stderr = logf
            stdout = subprocess.PIPE if pipes else logf
        proc = subprocess.Popen(
            argv,
            cwd=self.source.root,
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        if log:
            logf.close()
        self.procs[name] = proc
        return proc

    def kill_all(self) -> None:
        """
        SIGTERM the children newest first (clients, then the daemon while
        the emulator still answers its unsubscribe, then the emulator),
        SIGKILL whatever is still there after 5 s.
        """
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for proc in self.procs.values():
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def tail(self, name: str, lines: int = 15) -> str:
        """
        The last C{lines} lines of C{name}'s log, for error messages.
        """
        path = self.logs.get(name)
        if not path or not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """
    VmRSS / VmHWM of C{pid} in KiB (from /proc/PID/status).
    """
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """
    utime + stime of C{pid}, seconds.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def udp_drops(pid: int) -> dict[str, int]:
    """
    Datagrams the kernel dropped on each UDP socket of C{pid} (receive
    buffer full), keyed by local port, from /proc/net/udp.
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return {}
    out = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[9] in inodes:
                    out[str(int(fields[1].split(":")[1], 16))] = int(fields[12])
    except (OSError, IndexError, ValueError):
        pass
    return out


def start_emulator(procs: Processes, calls: int, deadline: float) -> tuple[str, list[str]]:
    """
    Start the emulator of C{procs.source} on a free UDP port; wait for its
    banner and the C{demo call} line of each of C{calls} calls.

    @param deadline: C{time.monotonic()} value.
    @return: (MI address C{udp:127.0.0.1:PORT}, Call-IDs).
    @raise BenchError: it exited, or was not ready by C{deadline}.
    """
    proc = procs.spawn(
        "emulator",
        [
            sys.executable,
            "-m",
            procs.source.emulator_module,
            "--mi",
            "udp:127.0.0.1:0",
            "--delay-scale",
            "0",
            "--demo-calls",
            str(calls),
        ],
    )
    mi_re = re.compile(r"MI on (udp:127\.0\.0\.1:\d+)")
    call_re = re.compile(r"demo call \S+ -> \S+: Call-ID (\S+)")
    mi, callids = None, []
    offset = 0
    # Older emulators routed print() through their logger, so the lines came
    # on stderr ("[stdout#info] demo call ..."); both streams go to one file.
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"emulator exited with {proc.returncode}:\n{procs.tail('emulator')}")
        with open(procs.logs["emulator"], "rb") as f:
            f.seek(offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        offset += cut
        for line in data[:cut].decode(errors="replace").splitlines():
            if mi is None and (m := mi_re.search(line)):
                mi = m.group(1)
            if m := call_re.search(line):
                callids.append(m.group(1))
        if mi is not None and len(callids) >= calls:
            return mi, callids
        time.sleep(0.05)
    raise BenchError(f"emulator not ready (MI {mi}, {len(callids)}/{calls} calls):\n{procs.tail('emulator')}")


def start_daemon(
    procs: Processes, mi: str, args: argparse.Namespace, deadline: float
) -> tuple[subprocess.Popen[bytes], int]:
    """
    Start C{python -m twisted callapi} (or C{--daemon-wrapper}) on a free port
    (retrying if another process took it first) and wait until a WebSocket
    handshake succeeds.

    @param mi: the emulator's MI address, C{udp:127.0.0.1:PORT}.
    @return: the daemon's process and WebSocket port.
    @raise BenchError: it exited or did not accept connections by C{deadline}.
    """
    for attempt in range(3):
        port = free_port()
        logfile = os.path.join(procs.tmpdir, f"daemon-{attempt}.log")
        runner = [args.daemon_wrapper] if args.daemon_wrapper else ["-m", "twisted"]
        argv = [
            sys.executable,
            *runner,
            "--log-format",
            "text",
            "--log-file",
            logfile,
            "--log-level",
            args.daemon_log_level,
            "callapi",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--mi",
            mi,
            "--path",
            args.path,
            "--log-level",
            args.daemon_log_level,
        ]
        proc = procs.spawn("daemon", argv)
        procs.logs["daemon-twist"] = logfile
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if websocket_ready(port, args.path):
                return proc, port
            time.sleep(0.1)
        else:
            raise BenchError(f"daemon did not accept WebSocket connections:\n{procs.tail('daemon')}")
        text = procs.tail("daemon") + procs.tail("daemon-twist")
        if "Address already in use" not in text:
            raise BenchError(f"daemon exited with {proc.returncode}:\n{text}")
    raise BenchError("daemon: no free port after 3 attempts")


def wait_subscribed(procs: Processes, args: argparse.Namespace, deadline: float) -> None:
    """
    Wait until the daemon logged its event subscriptions ("subscribed to
    E_... on udp:..." at info): a command started before that waits for
    events that never come (CallStart: answer_confirm_wait, 2 s; hold and
    transfers: their timeouts).  Only a warning if the lines do not come
    (log level above info, or a changed message).
    """
    if args.daemon_log_level not in ("debug", "info"):
        time.sleep(0.5)
        return
    missing = set(DAEMON_EVENTS)
    path = procs.logs.get("daemon-twist")
    while time.monotonic() < deadline:
        try:
            with open(path or "", "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        missing = {e for e in missing if f"subscribed to {e} on" not in text}
        if not missing:
            return
        time.sleep(0.05)
    log(f"warning: the daemon did not log its subscription to {', '.join(sorted(missing))}")


class Workers:
    """
    The load processes of one scenario and their line protocol.
    """

    def __init__(self, procs: Processes, configs: list[dict[str, Any]]) -> None:
        self.procs = procs
        self.configs = configs
        self.children: list[subprocess.Popen[bytes]] = []
        self.readers: list[LineReader] = []
        for i, cfg in enumerate(configs):
            path = os.path.join(procs.tmpdir, f"worker{i}.cfg.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            proc = procs.spawn(f"worker{i}", [sys.executable, BENCH_SCRIPT, "--worker", path], pipes=True)
            self.children.append(proc)
            self.readers.append(LineReader(proc.stdout))

    def send(self, word: str) -> None:
        """
        Send C{word} (C{go}, C{check}, C{stop}) to every worker.
        """
        for proc in self.children:
            assert proc.stdin is not None
            proc.stdin.write(word.encode() + b"\n")
            proc.stdin.flush()

    def expect(self, word: str, deadline: float) -> None:
        """
        Wait until every worker said C{word}.

        @param deadline: C{time.monotonic()} value.
        @raise BenchError: a worker failed or exited, or C{deadline} passed.
        """
        waiting = set(range(len(self.children)))
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"workers {sorted(waiting)} did not say {word!r} in time:\n"
                    + "".join(self.procs.tail(f"worker{i}") for i in waiting)
                )
            select.select([self.readers[i].fd for i in waiting], [], [], min(left, 0.5))
            for i in list(waiting):
                for line in self.readers[i].lines():
                    if line == word:
                        waiting.discard(i)
                    elif line == "failed":
                        raise BenchError(f"worker{i} failed:\n{self.procs.tail(f'worker{i}', 40)}")
                if i in waiting and (self.readers[i].eof or self.children[i].poll() is not None):
                    raise BenchError(f"worker{i} exited:\n{self.procs.tail(f'worker{i}', 40)}")

    def results(self) -> list[dict[str, Any]]:
        """
        Every worker's measurements (L{bench.load.Load.result}), once all said C{done}.
        """
        out = []
        for cfg in self.configs:
            with open(cfg["result_path"]) as f:
                out.append(json.load(f))
        return out

    def pids(self) -> list[int]:
        """
        The workers' process ids.
        """
        return [p.pid for p in self.children]
