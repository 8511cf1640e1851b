"""
The emulator's MI commands about OpenSIPS itself (C{which}, C{version},
C{help}, C{uptime}) and the C{cfgutils} shared variables (C{shv_get},
C{shv_set}), whose C{notify_delay_ms} is the harness knob the transfer
flow reads.

Traces followed (under C{../shared/opensips-traces}):
C{3.4/which_and_meta.jsonl}, C{4.0/which_and_meta.jsonl} (names, recipes,
C{help}, C{version}, C{shv_get} id 61), C{3.4/README.md} (the
C{notify_delay_ms} knob and the C{*_notify_delay} traces).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from callapi.emulator import timings
from callapi.emulator.mi_table import CommandTable, Handler, MIError, Respond, param_int, param_str


def _ctime(ts: int) -> str:
    """C{ctime()}-style local time without the newline, day of month
    space-padded: C{"Fri Dec  4 08:25:33 2026"} (3.4/README.md "uptime")."""
    return time.asctime(time.localtime(ts))


class CoreCommands:
    """
    C{which}, C{version}, C{help}, C{uptime}.

    @param clock: uptime counts from this clock's time at construction, or
        at the last L{restarted}.
    @param version: C{"3.4"} or C{"4.0"}.
    @param table: the version's command table.
    @param wall: epoch seconds now (the emulator's C{dlg_list} time base).
    """

    def __init__(
        self, clock: IReactorTime, version: str, table: CommandTable, wall: Callable[[], int]
    ) -> None:
        self._clock = clock
        self._version = version
        self._table = table
        self._wall = wall
        self._started = clock.seconds()

    def restarted(self) -> None:
        """OpenSIPS came back up: C{Up since} is now."""
        self._started = self._clock.seconds()

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {
            "core:which": self._cmd_which,
            "core:version": self._cmd_version,
            "core:help": self._cmd_help,
            "core:uptime": self._cmd_uptime,
        }

    def _cmd_which(self, params: dict[str, Any], respond: Respond) -> Any:
        """C{which} [C{command}] (3.4/which_and_meta.jsonl,
        4.0/which_and_meta.jsonl ids 1, 4-18)."""
        name = param_str(params, "command")
        if name is None:
            return self._table.which()
        if self._version == "4.0" and name.endswith(":") and name.count(":") == 1:
            names = self._table.module_names(name[:-1])
            if names is None:
                raise MIError(404, "unknown MI command")
            return names
        cmd = self._table.lookup_for_help(name)
        if cmd is None:
            raise MIError(404, "unknown MI command")
        return [list(r) for r in cmd.recipes]

    def _cmd_version(self, params: dict[str, Any], respond: Respond) -> Any:
        """C{{"Server": "OpenSIPS (3.4.18 (x86_64/linux))"}} (which_and_meta)."""
        return {"Server": timings.SERVER_HEADER[self._version]}

    def _cmd_uptime(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{uptime} (3.4) / C{core:uptime} (4.0, C{uptime} its alias):
        C{{"Now": "Fri Dec  4 08:25:33 2026", "Up since": "Fri Dec  4
        08:25:32 2026", "Up time": "1 [sec]"}}, C{ctime()}-style local times
        (3.4/README.md "uptime (a liveness probe ...)").  C{Up since} changes
        on L{restarted}.
        """
        now = self._wall()
        up = max(0, int(self._clock.seconds() - self._started))
        return {
            "Now": _ctime(now),
            "Up since": _ctime(now - up),
            "Up time": f"{up} [sec]",
        }

    def _cmd_help(self, params: dict[str, Any], respond: Respond) -> Any:
        """C{help mi_cmd=<name>} (3.4/which_and_meta.jsonl ids 4-6,
        4.0/which_and_meta.jsonl ids 19-25: 404 for unknown or ambiguous)."""
        name = param_str(params, "mi_cmd")
        if name is None:
            return {"Help": "not available for this command", "Exported by": "core"}
        cmd = self._table.lookup_for_help(name)
        if cmd is None:
            raise MIError(404, "unknown MI command")
        return {"Help": cmd.help, "Exported by": cmd.exported_by}


class SharedVariables:
    """cfgutils' shared variables: name -> (type, value)."""

    def __init__(self) -> None:
        self._shv: dict[str, tuple[str, Any]] = {"notify_delay_ms": ("integer", 0)}

    def commands(self) -> dict[str, Handler]:
        """Canonical MI name -> handler, for the emulator's dispatch."""
        return {"cfgutils:shv_get": self._cmd_shv_get, "cfgutils:shv_set": self._cmd_shv_set}

    @property
    def notify_delay(self) -> float:
        """C{notify_delay_ms} in milliseconds; 0 unless set to an integer."""
        value = self._shv.get("notify_delay_ms", ("integer", 0))[1]
        return float(value) if isinstance(value, int) else 0.0

    def _cmd_shv_get(self, params: dict[str, Any], respond: Respond) -> Any:
        """C{shv_get} (4.0/which_and_meta.jsonl id 61)."""
        name = param_str(params, "name")
        if name is None:
            return {"VARs": [{"name": n, "type": t, "value": v} for n, (t, v) in self._shv.items()]}
        if name not in self._shv:
            raise MIError(404, "Variable not found")
        t, v = self._shv[name]
        return {"VAR": {"type": t, "value": v}}

    def _cmd_shv_set(self, params: dict[str, Any], respond: Respond) -> Any:
        """
        C{shv_set}.  C{notify_delay_ms} is the harness knob of the 3.4 traces
        (3.4/README.md): baresip's transfer NOTIFYs then arrive late and are
        matched (C{*_notify_delay} traces).
        """
        name = param_str(params, "name") or ""
        kind = param_str(params, "type") or ""
        if kind in ("int", "integer", "i"):
            value: Any = param_int(params, "value")
            self._shv[name] = ("integer", value)
        elif kind in ("str", "string", "s"):
            self._shv[name] = ("string", param_str(params, "value"))
        else:
            raise MIError(400, "bad shv type")
        return "OK"
