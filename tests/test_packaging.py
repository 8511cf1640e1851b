"""
Packaging: one version source, the C{callapi} console script and
C{python -m callapi} (the daemon's options, C{--version}), and the twistd
plugin being found by Twisted's plugin scan.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker, ServiceMaker
from twisted.plugin import getPlugins

import callapi
from callapi import tap
from callapi.cli import daemon

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    # Outside the repository, so that only the installed callapi can answer.
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)


def console_script() -> str:
    script = Path(sys.executable).parent / "callapi"
    if not script.exists():
        if os.environ.get("CI"):
            pytest.fail(f"no callapi console script beside {sys.executable}")
        pytest.skip("callapi is not installed in this environment (pip install -e .)")
    return str(script)


def daemon_option_names() -> list[str]:
    return [f"--{name}" for name, *_ in tap.Options.optParameters + tap.Options.optFlags]


# -- version -----------------------------------------------------------------------


def test_version_is_single_sourced() -> None:
    assert version("callapi") == callapi.__version__
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: callapi.__version__"


def test_version_text() -> None:
    lines = callapi.version_text().splitlines()
    assert lines[0] == f"callapi {callapi.__version__}"
    assert lines[1] == f"Twisted {version('twisted')}"
    assert lines[2] == f"Autobahn {version('autobahn')}"
    assert lines[3].startswith("Python 3.")


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        daemon.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == callapi.version_text() + "\n"


def test_console_script_version(tmp_path: Path) -> None:
    result = run(tmp_path, console_script(), "--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == f"callapi {callapi.__version__}"


def test_python_m_callapi_version(tmp_path: Path) -> None:
    result = run(tmp_path, sys.executable, "-m", "callapi", "--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == callapi.version_text() + "\n"


# -- the daemon's options ----------------------------------------------------------


def test_python_m_callapi_help_lists_daemon_options(tmp_path: Path) -> None:
    result = run(tmp_path, sys.executable, "-m", "callapi", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: python -m callapi [options]\n")
    for name in daemon_option_names():
        assert name in result.stdout


def test_console_script_help(tmp_path: Path) -> None:
    result = run(tmp_path, console_script(), "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: callapi [options]\n")
    assert "--demo" in result.stdout and "--log-level=" in result.stdout


def test_bad_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        daemon.main(["--no-such-option"])
    assert exited.value.code == "callapi: error: option --no-such-option not recognized (see callapi --help)"


def test_bad_value_is_the_daemons_message() -> None:
    with pytest.raises(SystemExit) as exited:
        daemon.main(["--path", "call-api"])
    assert exited.value.code == "callapi: error: --path must start with /"


def test_options_are_twistd_nodaemon_callapi() -> None:
    config = daemon.server_options()
    config.parseOptions(["--nodaemon", "callapi", "--mi", "udp:127.0.0.1:8080", "--log-level", "debug"])
    assert config["nodaemon"] and config.subCommand == "callapi"
    plain = tap.Options()
    plain.parseOptions(["--mi", "udp:127.0.0.1:8080", "--log-level", "debug"])
    assert isinstance(config.subOptions, tap.Options)
    assert dict(config.subOptions) == dict(plain)


def test_service_maker_is_the_plugins() -> None:
    # The plugin twistd finds (the editable install used to hide it) is ours.
    (plugin,) = [p for p in getPlugins(IServiceMaker) if p.tapname == "callapi"]
    assert isinstance(plugin, ServiceMaker)
    ours = daemon.SERVICE_MAKER
    assert (ours.tapname, ours.module) == (plugin.tapname, plugin.module)
    assert ours.description == plugin.description
    assert plugin.options is ours.options is tap.Options


# -- the twistd plugin -------------------------------------------------------------


def test_twisted_plugins_is_not_a_package() -> None:
    # Twisted's plugin scan only looks in twisted/plugins/ directories without one.
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "twisted.plugins" in setup["options"]["packages"].split()


def test_callapi_writes_no_pid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """C{callapi} runs twistd in the foreground with no pid file (two may run from one directory)."""
    import twisted.scripts.twistd

    seen: list[Any] = []
    monkeypatch.setattr(twisted.scripts.twistd, "runApp", seen.append)
    with pytest.raises(SystemExit) as exit_info:
        daemon.main(["--demo"])
    assert exit_info.value.code == 0
    (config,) = seen
    assert config["nodaemon"] and config["pidfile"] == "" and config.subCommand == "callapi"
