"""
YAML configuration: reads a file and maps its keys onto option names.

Accepted keys (a file written for the Go Call API works unchanged):

  ws_server.host, ws_server.port   -> --listen tcp:PORT:interface=HOST
  ws_server.http_path              -> --path
  mi.url                           -> --mi (C{HOST:PORT} or C{udp:...}/C{unix:...})
  sip.uri                          -> --sip-uri
  log.level, log.file_path         -> --log-level, --log-file
  callapi.<option>                 -> --<option> (any option, C{_} or C{-})

The command line wins over the file; the file wins over defaults.
"""

from __future__ import annotations

from typing import Any

import yaml


class ConfigError(ValueError):
    """
    The file cannot be read or has a bad key or value; the text says which.
    """


#: The top-level keys a file may have.
SECTIONS = ("ws_server", "mi", "sip", "log", "callapi")

#: Go call-api.yml (section, key) -> our option name.
GO_KEYS = {
    ("ws_server", "http_path"): "path",
    ("mi", "url"): "mi",
    ("sip", "uri"): "sip-uri",
    ("log", "level"): "log-level",
    ("log", "file_path"): "log-file",
}


def load(path: str, option_names: set[str]) -> dict[str, Any]:
    """
    Read the YAML file at C{path}.

    @param option_names: the long option names that C{callapi:} may set.
    @return: option name -> value (strings, numbers or booleans as in YAML).
    @raise ConfigError: unreadable file, invalid YAML, unknown key, bad shape.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"config file {path}: unknown key {section} (expected {', '.join(SECTIONS)})")
        if content is None:
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"config file {path}: {section} must be a mapping")
        if section == "callapi":
            for key, value in content.items():
                name = str(key).replace("_", "-")
                if name not in option_names:
                    raise ConfigError(f"config file {path}: unknown option callapi.{key}")
                values[name] = value
            continue
        if section == "ws_server":
            host = content.get("host")
            port = content.get("port")
            if host is not None or port is not None:
                interface = str(host or "127.0.0.1").replace(":", "\\:")  # IPv6: escape colons
                values["listen"] = f"tcp:{port if port is not None else 5059}:interface={interface}"
        for key, value in content.items():
            if section == "ws_server" and key in ("host", "port"):
                continue
            option = GO_KEYS.get((section, key))
            if option is None:
                raise ConfigError(f"config file {path}: unknown key {section}.{key}")
            values[option] = value
    return values
