"""The installed command as a separate process, the way an operator runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_installed_command_reports_a_missing_setting_without_a_traceback(
    tmp_path: pytest.TempPathFactory,
) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", "from entrypoints.cli import main; main()", "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # type: ignore[arg-type]
        check=False,
    )
    assert done.returncode == 2
    assert "TASKFLOW_LINK_SECRET_KEY: is required but not set" in done.stderr
    assert "Traceback" not in done.stderr
