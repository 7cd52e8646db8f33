"""The installed command as a separate process, the way an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNS = [
    pytest.param([sys.executable, "-c", "from entrypoints.cli import main; main()"], id="main"),
    pytest.param([sys.executable, "-m", "entrypoints"], id="python-m-entrypoints"),
    pytest.param([sys.executable, "-m", "entrypoints.cli"], id="python-m-entrypoints.cli"),
    pytest.param([str(Path(sys.executable).parent / "taskflow-link")], id="script"),
]


@pytest.mark.parametrize("command", RUNS)
def test_every_way_in_runs_the_command_and_reports_a_missing_setting_plainly(
    tmp_path: Path, command: list[str]
) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(  # noqa: S603 - our own command
        [*command, "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done
    assert "TASKFLOW_LINK_SECRET_KEY: is required but not set" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", RUNS)
def test_every_way_in_lists_the_commands(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run(  # noqa: S603 - our own command
        [*command, "--help"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done
    assert "serve" in done.stdout
    assert "db" in done.stdout
