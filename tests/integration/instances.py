"""``taskflow-link serve`` as separate processes, the way an operator runs several instances:
each on its own port, all on one Postgres (and one Redis), behind one public URL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.harness import TEST_SECRET_KEY
from tests.servers import free_port


class Instance:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, wait: float = 60) -> int:
        """Signal the process and wait for it to exit (its exit code)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=wait)


def environment(**settings: str | float) -> dict[str, str]:
    """This machine's environment without any TASKFLOW_LINK_* of its own, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_LINK_")}
    env["TASKFLOW_LINK_SECRET_KEY"] = TEST_SECRET_KEY
    env.update({f"TASKFLOW_LINK_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def serving(
    directory: Path, env: dict[str, str], *args: str, port: int | None = None
) -> Iterator[Instance]:
    """``taskflow-link serve`` on a free port, ready (``/readyz`` 200) when this yields."""
    port = port or free_port()
    log = directory / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-c",
                "from entrypoints.cli import main; main()",
                "serve",
                "--port",
                str(port),
                *args,
            ],
            env=env,
            cwd=directory,  # no .env file of the developer's
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    instance = Instance(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(instance)
        yield instance
    finally:
        with contextlib.suppress(Exception):
            instance.stop(wait=30)
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_ready(instance: Instance, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{instance.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{instance.url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"serve was not ready in time:\n{instance.output()}")
