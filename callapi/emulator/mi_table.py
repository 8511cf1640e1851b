"""
MI command table and JSON-RPC datagram codec of the OpenSIPS emulator.

Everything here is pure data/logic (no Twisted): which names exist on 3.4 and
on 4.0, how 4.0 resolves a method name, which parameter sets ("recipes") a
command accepts and which JSON-RPC error a mismatch gives.

Sources (all under C{../shared/opensips-traces}):
  - C{3.4/which_and_meta.jsonl}: the 65 names of C{which} on 3.4, in order.
  - C{4.0/which_and_meta.jsonl}: the 69 canonical names on 4.0, in order,
    C{which command=<module>:}, C{-32001 Method ambiguous}, mixed forms.
  - C{4.0/which_legacy_names.jsonl}: the recipes of every 3.4 name.
  - C{3.4/h_errors.jsonl}, C{4.0/h_errors.jsonl}: transport level errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

# ---------------------------------------------------------------------------
# Command table
# ---------------------------------------------------------------------------

#: (3.4 name, 4.0 canonical name, recipes) in the order of 3.4's C{which}
#: reply (3.4/which_and_meta.jsonl).  Recipes from 4.0/which_legacy_names.jsonl
#: (3.4 answers the same recipes apart from call_hold/call_unhold, see
#: L{RECIPES_34_OVERRIDES}).
_COMMANDS: list[tuple[str, str, list[list[str]]]] = [
    ("get_statistics", "statistics:get", [["statistics"]]),
    ("list_statistics", "statistics:list", [[], ["statistics"]]),
    ("reset_statistics", "statistics:reset", [["statistics"]]),
    ("reset_all_statistics", "statistics:reset_all", [[]]),
    ("uptime", "core:uptime", [[]]),
    ("version", "core:version", [[], ["revision"]]),
    ("pwd", "core:pwd", [[]]),
    ("arg", "core:arg", [[]]),
    ("which", "core:which", [[], ["command"]]),
    ("ps", "core:ps", [[]]),
    ("kill", "core:kill", [[]]),
    ("log_level", "core:log_level", [[], ["level"], ["level", "pid"]]),
    ("xlog_level", "core:xlog_level", [[], ["level"]]),
    ("log_level_filter", "core:log_level_filter", [["consumer"], ["consumer", "level_filter"]]),
    ("log_mute_state", "core:log_mute_state", [["consumer"], ["consumer", "mute_state"]]),
    ("shm_check", "mem:shm_check", [[]]),
    ("cache_store", "cache:store", [["system", "attr", "value"], ["system", "attr", "value", "expire"]]),
    ("cache_fetch", "cache:fetch", [["system", "attr"]]),
    ("cache_remove", "cache:remove", [["system", "attr"]]),
    ("event_subscribe", "evi:subscribe", [["event", "socket"], ["event", "socket", "expire"]]),
    ("events_list", "evi:list", [[]]),
    ("subscribers_list", "evi:subscribers", [[], ["event"], ["event", "socket"]]),
    ("raise_event", "evi:raise", [["event"], ["event", "params"]]),
    ("list_tcp_conns", "tcp:list", [[], ["proto"]]),
    ("mem_pkg_dump", "mem:pkg_dump", [["pid"], ["pid", "log_level"]]),
    ("mem_shm_dump", "mem:shm_dump", [[], ["log_level"]]),
    ("mem_rpm_dump", "mem:rpm_dump", [[], ["log_level"]]),
    ("reload_routes", "core:reload_routes", [[]]),
    ("sr_get_status", "status_report:get", [["group"], ["group", "identifier"]]),
    ("sr_list_status", "status_report:status", [[], ["group"]]),
    ("sr_list_reports", "status_report:reports", [[], ["group"], ["group", "identifier"]]),
    ("sr_list_identifiers", "status_report:identifiers", [[], ["group"]]),
    ("help", "core:help", [[], ["mi_cmd"]]),
    ("list_blacklists", "blacklists:list", [[], ["name"]]),
    (
        "check_blacklists",
        "blacklists:check_all",
        [["ip"], ["proto", "ip"], ["proto", "ip", "port"], ["proto", "ip", "port", "pattern"]],
    ),
    (
        "check_blacklist",
        "blacklists:check",
        [
            ["name", "ip"],
            ["name", "proto", "ip"],
            ["name", "proto", "ip", "port"],
            ["name", "proto", "ip", "port", "pattern"],
        ],
    ),
    ("add_blacklist_rule", "blacklists:add_rule", [["name", "rule"], ["name", "rule", "expire"]]),
    ("del_blacklist_rule", "blacklists:del_rule", [["name", "rule"]]),
    (
        "t_uac_dlg",
        "tm:uac_dlg",
        [
            ["method", "ruri", "headers"],
            ["method", "ruri", "headers", "next_hop"],
            ["method", "ruri", "headers", "socket"],
            ["method", "ruri", "headers", "body"],
            ["method", "ruri", "headers", "next_hop", "socket"],
            ["method", "ruri", "headers", "next_hop", "body"],
            ["method", "ruri", "headers", "socket", "body"],
            ["method", "ruri", "headers", "next_hop", "socket", "body"],
        ],
    ),
    ("t_uac_cancel", "tm:uac_cancel", [["callid", "cseq"]]),
    ("t_hash", "tm:hash", [[]]),
    (
        "t_reply",
        "tm:reply",
        [
            ["code", "reason", "trans_id", "to_tag"],
            ["code", "reason", "trans_id", "to_tag", "new_headers"],
            ["code", "reason", "trans_id", "to_tag", "body"],
            ["code", "reason", "trans_id", "to_tag", "new_headers", "body"],
        ],
    ),
    ("dlg_list", "dialog:list", [[], ["callid"], ["callid", "from_tag"], ["index", "counter"]]),
    ("dlg_list_ctx", "dialog:list_ctx", [[], ["callid"], ["callid", "from_tag"], ["index", "counter"]]),
    ("dlg_end_dlg", "dialog:end_dlg", [["dialog_id"], ["dialog_id", "extra_hdrs"]]),
    ("dlg_db_sync", "dialog:db_sync", [[]]),
    ("dlg_restore_db", "dialog:restore_db", [[]]),
    ("dlg_cluster_sync", "dialog:cluster_sync", [[], ["sharing_tag"]]),
    ("profile_get_size", "dialog:profile_get_size", [["profile"], ["profile", "value"]]),
    ("profile_list_dlgs", "dialog:profile_list_dlgs", [["profile"], ["profile", "value"]]),
    ("profile_get_values", "dialog:profile_get_values", [["profile"]]),
    ("list_all_profiles", "dialog:list_all_profiles", [[]]),
    ("profile_end_dlgs", "dialog:profile_end_dlgs", [["profile"], ["profile", "value"]]),
    ("dlg_push_var", "dialog:push_var", [["dlg_val_name", "dlg_val_value", "DID"]]),
    (
        "dlg_send_sequential",
        "dialog:send_sequential",
        [
            ["callid"],
            ["callid", "mode"],
            ["callid", "method"],
            ["callid", "body"],
            ["callid", "mode", "method"],
            ["callid", "mode", "body"],
            ["callid", "method", "body"],
            ["callid", "method", "body", "mode"],
            ["callid", "method", "body", "mode", "headers"],
        ],
    ),
    (
        "call_transfer",
        "callops:transfer",
        [
            ["callid", "leg", "destination"],
            ["callid", "leg", "transfer_callid", "transfer_leg"],
            ["callid", "leg", "transfer_callid", "transfer_leg", "destination"],
            [
                "callid",
                "leg",
                "transfer_callid",
                "transfer_fromtag",
                "transfer_totag",
                "transfer_destination",
            ],
        ],
    ),
    ("call_hold", "callops:hold", [["callid"], ["callid", "leg"], ["callid", "leg", "headers"]]),
    ("call_unhold", "callops:unhold", [["callid"], ["callid", "leg"], ["callid", "leg", "headers"]]),
    ("rand_set_prob", "cfgutils:rand_set_prob", [["prob_proc"]]),
    ("rand_reset_prob", "cfgutils:rand_reset_prob", [[]]),
    ("rand_get_prob", "cfgutils:rand_get_prob", [[]]),
    ("get_config_hash", "cfgutils:get_config_hash", [[]]),
    ("check_config_hash", "cfgutils:check_config_hash", [[]]),
    ("shv_get", "cfgutils:shv_get", [[], ["name"]]),
    ("shv_set", "cfgutils:shv_set", [["name", "type", "value"]]),
]

#: 3.4 has no per-leg hold (4.0/README.md "callops:hold / callops:unhold").
RECIPES_34_OVERRIDES: dict[str, list[list[str]]] = {
    "call_hold": [["callid"]],
    "call_unhold": [["callid"]],
}

#: Commands only on 4.0 (4.0/README.md: "new: core:profiling_proc, tcp:close,
#: dialog:set_profile, dialog:unset_profile").  Their recipes were not traced.
_NEW_40: dict[str, list[list[str]]] = {
    "core:profiling_proc": [[], ["proc"]],
    "tcp:close": [["conn_id"]],
    "dialog:set_profile": [["dialog_id", "profile"], ["dialog_id", "profile", "value"]],
    "dialog:unset_profile": [["dialog_id", "profile"], ["dialog_id", "profile", "value"]],
}

#: Order of C{which} on 4.0 (4.0/which_and_meta.jsonl, request id 1).
WHICH_40: list[str] = [
    "statistics:get",
    "statistics:list",
    "statistics:reset",
    "statistics:reset_all",
    "core:uptime",
    "core:version",
    "core:pwd",
    "core:arg",
    "core:which",
    "core:ps",
    "core:kill",
    "core:log_level",
    "core:xlog_level",
    "core:profiling_proc",
    "core:log_level_filter",
    "core:log_mute_state",
    "core:reload_routes",
    "core:help",
    "tcp:list",
    "tcp:close",
    "mem:shm_check",
    "mem:pkg_dump",
    "mem:shm_dump",
    "mem:rpm_dump",
    "cache:store",
    "cache:fetch",
    "cache:remove",
    "status_report:get",
    "status_report:status",
    "status_report:reports",
    "status_report:identifiers",
    "evi:subscribe",
    "evi:list",
    "evi:subscribers",
    "evi:raise",
    "blacklists:list",
    "blacklists:check_all",
    "blacklists:check",
    "blacklists:add_rule",
    "blacklists:del_rule",
    "tm:uac_dlg",
    "tm:uac_cancel",
    "tm:hash",
    "tm:reply",
    "dialog:list",
    "dialog:list_ctx",
    "dialog:end_dlg",
    "dialog:db_sync",
    "dialog:restore_db",
    "dialog:cluster_sync",
    "dialog:profile_get_size",
    "dialog:profile_list_dlgs",
    "dialog:profile_get_values",
    "dialog:list_all_profiles",
    "dialog:profile_end_dlgs",
    "dialog:push_var",
    "dialog:send_sequential",
    "dialog:set_profile",
    "dialog:unset_profile",
    "callops:transfer",
    "callops:hold",
    "callops:unhold",
    "cfgutils:rand_set_prob",
    "cfgutils:rand_reset_prob",
    "cfgutils:rand_get_prob",
    "cfgutils:get_config_hash",
    "cfgutils:check_config_hash",
    "cfgutils:shv_get",
    "cfgutils:shv_set",
]

#: 3.4 C{which} order (3.4/which_and_meta.jsonl).
WHICH_34: list[str] = [name for name, _, _ in _COMMANDS]

#: Core groups: on 3.4 their C{help} says C{"Exported by": "core"}, on 4.0 the
#: group name (4.0/README.md, "help ... names the core group").
_CORE_GROUPS = {"statistics", "core", "tcp", "mem", "cache", "status_report", "evi", "blacklists"}

#: C{help} texts seen in the traces; everything else "not available".
_HELP_TEXTS = {"evi:subscribe": "subscribes an event to the Event Interface"}

#: Commands registered with MI_NAMED_PARAMS_ONLY: positional params give
#: -32602 "Command only supports named parameters" (3.4/h_errors.jsonl id 8,
#: 4.0/h_errors.jsonl id 8); C{callops:hold ["x"]} and C{dialog:end_dlg ["x"]}
#: are accepted positionally (4.0/h_errors.jsonl ids 19, 20).
NAMED_ONLY = {"dialog:list", "dialog:list_ctx"}


class Command:
    """
    One MI command: its canonical (4.0) name, its 3.x name, its module and
    recipes for one OpenSIPS version.
    """

    def __init__(self, canonical: str, legacy: str | None, recipes: list[list[str]], version: str) -> None:
        self.canonical = canonical
        self.legacy = legacy
        self.recipes = recipes
        group = canonical.split(":", 1)[0]
        self.module = group
        if group in _CORE_GROUPS:
            self.exported_by = group if version == "4.0" else "core"
        else:
            self.exported_by = group
        self.help = _HELP_TEXTS.get(canonical, "not available for this command")
        self.named_only = canonical in NAMED_ONLY

    @property
    def short(self) -> str:
        """The name without its module prefix (C{hold} for C{callops:hold})."""
        return self.canonical.split(":", 1)[1]

    def name_for(self, version: str) -> str:
        """The name C{which} lists on C{version}."""
        return self.canonical if version == "4.0" or self.legacy is None else self.legacy


class MIError(Exception):
    """
    A JSON-RPC error reply: C{code}, C{message} and optional C{data}, exactly
    as mi_datagram writes them (3.4/README.md "Errors").
    """

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def as_error(self) -> dict[str, Any]:
        """The reply's C{error} member."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def invalid_params(data: str) -> MIError:
    """-32602 with one of the C{data} texts of 3.4/README.md."""
    return MIError(-32602, "Invalid params", data)


def server_error(data: str = "Failed to handle parameter") -> MIError:
    """-32000 (3.4/e_attended_transfer_errors.jsonl id 6)."""
    return MIError(-32000, "Server error", data)


class CommandTable:
    """
    The MI commands of one OpenSIPS version and its name resolution
    (4.0/README.md "MI command names").
    """

    def __init__(self, version: str) -> None:
        self.version = version
        self.commands: list[Command] = []
        by_canonical: dict[str, Command] = {}
        for legacy, canonical, recipes in _COMMANDS:
            if version != "4.0":
                recipes = RECIPES_34_OVERRIDES.get(legacy, recipes)
            cmd = Command(canonical, legacy, recipes, version)
            by_canonical[canonical] = cmd
        if version == "4.0":
            for canonical, recipes in _NEW_40.items():
                by_canonical[canonical] = Command(canonical, None, recipes, version)
            self.commands = [by_canonical[n] for n in WHICH_40]
        else:
            self.commands = [by_canonical[c] for _, c, _ in _COMMANDS]
        self._canonical = {c.canonical: c for c in self.commands}
        self._legacy = {c.legacy: c for c in self.commands if c.legacy}
        self._short: dict[str, list[Command]] = {}
        for c in self.commands:
            self._short.setdefault(c.short, []).append(c)

    def which(self) -> list[str]:
        """The C{which} reply without parameters."""
        return [c.name_for(self.version) for c in self.commands]

    def module_names(self, module: str) -> list[str] | None:
        """C{which command=<module>:} (4.0 only); C{None} if unknown."""
        names = [c.canonical for c in self.commands if c.module == module]
        return names or None

    def resolve(self, name: str) -> Command:
        """
        Resolve a method name or raise L{MIError}.

        3.4: exact 3.x names only.  4.0 (4.0/README.md): a name with C{:} must
        be an exact canonical name; without C{:} the short local name wins if
        exactly one module exports it, several give -32001 (no fallback),
        otherwise the 3.x alias; anything else -32601.  Case-sensitive.
        """
        if self.version != "4.0":
            cmd = self._legacy.get(name)
            if cmd is None:
                raise MIError(-32601, "Method not found")
            return cmd
        if ":" in name:
            cmd = self._canonical.get(name)
            if cmd is None:
                raise MIError(-32601, "Method not found")
            return cmd
        shorts = self._short.get(name, [])
        if len(shorts) == 1:
            return shorts[0]
        if len(shorts) > 1:
            raise MIError(
                -32001, "Method ambiguous", "supported names: " + ", ".join(c.canonical for c in shorts)
            )
        cmd = self._legacy.get(name)
        if cmd is None:
            raise MIError(-32601, "Method not found")
        return cmd

    def lookup_for_help(self, name: str) -> Command | None:
        """C{which command=...} / C{help mi_cmd=...}: ambiguous counts as unknown."""
        try:
            return self.resolve(name)
        except MIError:
            return None


def match_recipe(cmd: Command, params: Any) -> dict[str, Any]:
    """
    Map the JSON-RPC C{params} onto one of C{cmd}'s recipes.

    Rules derived from the traces: an object must name exactly the members of
    one recipe; otherwise -32602 "Named parameters do not match" when some
    recipe has that many parameters (3.4/g_dlg_end_dlg.jsonl id 4,
    4.0/h_errors.jsonl id 17), else "Too few or too many parameters"
    (3.4/h_errors.jsonl ids 2, 3).  An array is positional: refused for
    named-only commands (3.4/h_errors.jsonl id 8), else mapped onto the first
    recipe of that length (4.0/h_errors.jsonl ids 19, 20).
    """
    if params is None:
        params = {}
    if isinstance(params, list):
        if cmd.named_only:
            raise invalid_params("Command only supports named parameters")
        for recipe in cmd.recipes:
            if len(recipe) == len(params):
                return dict(zip(recipe, params, strict=False))
        raise invalid_params("Too few or too many parameters")
    if not isinstance(params, dict):
        raise invalid_params("Too few or too many parameters")
    keys = set(params)
    for recipe in cmd.recipes:
        if set(recipe) == keys and len(recipe) == len(keys):
            return dict(params)
    if any(len(r) == len(keys) for r in cmd.recipes):
        raise invalid_params("Named parameters do not match")
    raise invalid_params("Too few or too many parameters")


def param_str(params: dict[str, Any], name: str, default: str | None = None) -> str | None:
    """
    A string parameter; numbers are accepted and converted (3.4/README.md:
    "Numbers are accepted where strings are expected", C{dlg_list callid:
    12345}).  Other JSON types: -32602 "Bad type for parameter '<name>'".
    """
    if name not in params:
        return default
    value = params[name]
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise invalid_params(f"Bad type for parameter '{name}'")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    raise invalid_params(f"Bad type for parameter '{name}'")


def param_int(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    """An integer parameter; numeric strings are accepted (C{expire: "30"})."""
    if name not in params:
        return default
    value = params[name]
    if isinstance(value, bool):
        raise invalid_params(f"Bad type for parameter '{name}'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise invalid_params(f"Bad type for parameter '{name}'")


# ---------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------

#: mi_datagram's answer to JSON it cannot parse: plain text, not JSON
#: (3.4/h_errors.jsonl ids 101, "this is not json").
PARSE_ERROR = b"400 Parse_error"


def dumps(value: Any) -> bytes:
    """Compact JSON as OpenSIPS writes it (no spaces, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_result(request_id: Any, result: Any) -> bytes:
    """C{{"jsonrpc":"2.0","result":...,"id":...}} in that member order."""
    return dumps({"jsonrpc": "2.0", "result": result, "id": request_id})


def encode_error(request_id: Any, error: MIError) -> bytes:
    """C{{"jsonrpc":"2.0","error":{...},"id":...}} in that member order."""
    return dumps({"jsonrpc": "2.0", "error": error.as_error(), "id": request_id})


class Respond:
    """
    Sends the reply datagram(s) of one MI request; nothing for a
    notification (no C{id}, 3.4/h_errors.jsonl).

    @ivar request_id: the request's C{id}, echoed with its JSON type.
    @ivar method: the method name as the request spelled it.
    """

    def __init__(self, reply: Callable[[bytes], None] | None, request_id: Any, method: str) -> None:
        self._reply = reply
        self.request_id = request_id
        self.method = method

    def result(self, value: Any) -> None:
        """Send C{{"result": value}}."""
        if self._reply is not None:
            self._reply(encode_result(self.request_id, value))

    def error(self, err: MIError) -> None:
        """Send C{{"error": ...}} for C{err}."""
        if self._reply is not None:
            self._reply(encode_error(self.request_id, err))


#: What a command handler returns when it answers later through its
#: L{Respond} (or never) instead of returning the result at once.
ASYNC: Any = object()

#: A command handler: C{handler(params, respond)} returns the result, or
#: L{ASYNC}, or raises L{MIError}.
Handler = Callable[[dict[str, Any], Respond], Any]


def encode_event(event: str, params: dict[str, Any] | None) -> bytes:
    """
    One EVI notification (event_datagram): C{params} omitted when the event
    has none (3.4/h_subscription_expiry.jsonl id 22).
    """
    data: dict[str, Any] = {"jsonrpc": "2.0", "method": event}
    if params is not None:
        data["params"] = params
    return dumps(data)


def all_names(table: CommandTable) -> Iterable[str]:
    """Every name that resolves (for tests and the standalone banner)."""
    for cmd in table.commands:
        yield cmd.canonical
        if cmd.legacy:
            yield cmd.legacy
