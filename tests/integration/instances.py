"""``taskflow-link serve`` as separate processes, the way an operator runs several instances:
each on its own port, all on one Postgres (and one Redis), behind one public URL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.harness import TEST_SECRET_KEY
from tests.integration.waiting import START_UP_SECONDS, NotReadyInTime, until_ready
from tests.servers import PORT_TRIES, free_port, port_was_taken


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


class PortTaken(AssertionError):
    """``serve`` ended before it was ready: its port was in use."""


@contextlib.contextmanager
def serving(
    directory: Path, env: dict[str, str], *args: str, port: int | None = None
) -> Iterator[Instance]:
    """``taskflow-link serve`` on a free port, ready (``/readyz`` 200) when this yields. A
    port found free that another process took before ``serve`` bound it is picked again
    (one the caller chose, ``port``, is not: its URL may be in ``env``)."""
    for attempt in range(1, PORT_TRIES + 1):
        instance = _start(directory, env, args, port or free_port())
        try:
            wait_ready(instance)
        except PortTaken:
            _end(instance)
            if port is not None or attempt == PORT_TRIES:
                raise
            continue
        except BaseException:
            _end(instance)
            raise
        try:
            yield instance
        finally:
            _end(instance)
        return


def _start(directory: Path, env: dict[str, str], args: tuple[str, ...], port: int) -> Instance:
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
    return Instance(process, f"http://127.0.0.1:{port}", log)


def _end(instance: Instance) -> None:
    with contextlib.suppress(Exception):
        instance.stop(wait=30)
    if instance.process.poll() is None:
        instance.process.kill()
        instance.process.wait()


def wait_ready(instance: Instance, seconds: float = START_UP_SECONDS) -> None:
    def ready() -> bool:
        try:
            return httpx.get(f"{instance.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if until_ready(instance.process, ready, within=seconds):
            return
    except NotReadyInTime:
        raise AssertionError(f"serve was not ready in time:\n{instance.output()}") from None
    said = instance.output()
    if port_was_taken(said):
        raise PortTaken(f"serve's port was in use:\n{said}")
    raise AssertionError(f"serve exited early:\n{said}")
