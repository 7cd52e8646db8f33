"""``taskflow-link serve`` as an operator runs it, in a process of its own: JSON log lines on
stderr, the token on /metrics, and prometheus_client's multiprocess mode (which it reads from
the environment when it is first imported, hence a fresh process)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import TEST_SECRET_KEY
from tests.integration.waiting import NotReadyInTime, until_ready
from tests.servers import PORT_TRIES, free_port, port_was_taken

TOKEN = "scrape-token-Vb7nQ2xPz9Lm"
INTERACTION_TOKEN = "aW50ZXJhY3Rpb24" + "Q" * 60


@dataclass
class Started:
    """``serve`` in a process of its own: where it answers, and the file of its stderr."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def said(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> str:
        """Ctrl-C, as an operator would; what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        return self.said()

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    metrics_dir: Path
    started: Started

    def stop(self) -> str:
        return self.started.stop()


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    # Where Python finds the code under test (a checkout not installed in the environment).
    where = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    return {
        **where,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_STORAGE": "memory",
        "TASKFLOW_LINK_DISCORD_CLIENT_ID": "1100000000000000001",
        "TASKFLOW_LINK_DISCORD_CLIENT_SECRET": "not-used-here",
        **extra,
    }


def _serve(tmp_path: Path, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    command = "from entrypoints.cli import main; main()"
    return subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-c", command, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _healthy(started: Started) -> bool:
    try:
        return httpx.get(f"{started.url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _started(
    tmp_path: Path, env: dict[str, str], *args: str, ready: Callable[[Started], bool] = _healthy
) -> Started:
    """``serve`` on a free port, once ``ready``. A port found free that another process took
    before ``serve`` bound it (both cores busy, other test runs) is picked again."""
    command = "from entrypoints.cli import main; main()"
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        stderr = tmp_path / f"serve-{port}.stderr"
        with stderr.open("wb") as written:
            process = subprocess.Popen(  # noqa: S603 - our own command
                [sys.executable, "-c", command, "serve", "--port", str(port), *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=written,
            )
        started = Started(f"http://127.0.0.1:{port}", process, stderr)
        try:
            if until_ready(process, functools.partial(ready, started)):
                return started
        except NotReadyInTime:
            started.end()
            pytest.fail(f"serve was not ready in time:\n{started.said()}")
        if not (port_was_taken(started.said()) and attempt < PORT_TRIES):
            pytest.fail(f"serve ended before it was ready:\n{started.said()}")
        # (another process took the port: another one)
    raise AssertionError("unreachable: the last try returns or fails")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = _environment(
        tmp_path,
        TASKFLOW_LINK_LOG_FORMAT="json",
        TASKFLOW_LINK_METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    started = _started(tmp_path, env)
    try:
        yield Served(started.url, started.process, metrics_dir, started)
    finally:
        started.end()


def test_json_logs_request_ids_and_multiprocess_metrics(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        kept = client.get("/healthz", headers={"X-Request-ID": "operator-check.1"})
        replaced = client.get("/healthz", headers={"X-Request-ID": "no good<b>"})
        # A control byte: h11 passed it to the app (which replaced the id), httptools refuses
        # the request itself (400). Either way it never comes back.
        control = client.get("/healthz", headers={"X-Request-ID": "no\x7fgood"})
        # A path with an interaction token: the access log must not keep it, in any field.
        leaked = client.get(f"/webhooks/1100000000000000001/{INTERACTION_TOKEN}/messages/@original")
        refused = client.get("/metrics")
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert kept.headers["x-request-id"] == "operator-check.1"
    assert replaced.headers["x-request-id"] != "no good<b>"
    assert control.headers.get("x-request-id") != "no\x7fgood"
    assert control.status_code in {200, 400}
    assert leaked.status_code == 404
    assert refused.status_code == 401
    assert scraped.status_code == 200
    # Multiprocess mode: the values come from the files every process writes.
    assert any(served.metrics_dir.glob("counter_*.db"))
    assert any(served.metrics_dir.glob("gauge_livesum_*.db"))  # requests in progress
    healthz = [
        line
        for line in scraped.text.splitlines()
        if line.startswith("taskflow_link_http_requests_total{") and 'path="/healthz"' in line
    ]
    assert healthz
    assert float(healthz[0].rsplit(" ", 1)[1]) >= 2

    stderr = served.stop()
    assert served.process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing logged"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    access = {
        line["request_id"]: line for line in lines if line["logger"] == "taskflow_link.access"
    }
    assert access["operator-check.1"]["path"] == "/healthz"
    assert access[replaced.headers["x-request-id"]]["status"] == 200
    assert access[leaked.headers["x-request-id"]]["status"] == 404
    assert INTERACTION_TOKEN not in stderr
    assert TOKEN not in stderr
    # At its end the process took its live gauges (requests in progress) out of the sum.
    assert not list(served.metrics_dir.glob("gauge_livesum_*.db"))


def test_a_missing_multiprocess_directory_is_named_at_start(tmp_path: Path) -> None:
    env = _environment(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    process = _serve(tmp_path, env, free_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "PROMETHEUS_MULTIPROC_DIR must be an existing directory" in stderr
    assert "Traceback" not in stderr


def _scraped_total(url: str, path: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("taskflow_link_http_requests_total{") and f'path="{path}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_several_workers_answer_for_all_of_them(tmp_path: Path) -> None:
    """``serve --workers 2`` without PROMETHEUS_MULTIPROC_DIR: a directory of its own for the
    run, so that /metrics of either worker counts the requests both served."""
    env = _environment(
        tmp_path,
        TMPDIR=str(tmp_path),  # where the run's directory goes, to be seen here
        TASKFLOW_LINK_STORAGE="sql",
        TASKFLOW_LINK_REDIS_URL="redis://127.0.0.1:1/0",  # unreachable: each uses its memory
        TASKFLOW_LINK_EMAIL_BACKEND="smtp",
        TASKFLOW_LINK_SMTP_HOST="127.0.0.1",
    )
    started = _started(tmp_path, env, "--workers", "2")  # one /healthz answered
    url, process = started.url, started.process
    try:
        answered = 1
        (directory,) = tmp_path.glob("taskflow-link-metrics-*")
        # One worker answered; the other may still be starting on a busy machine (each makes
        # its metrics when it starts): wait for both before the requests they share.
        deadline = time.monotonic() + 90  # a wait for start-up, not a measurement
        while len(list(directory.glob("counter_*.db"))) < 2:
            assert process.poll() is None, started.said()
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.1)
        for _ in range(40):
            answered += httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        # A request is counted just after its answer: wait for the last ones to be written.
        deadline = time.monotonic() + 60
        while _scraped_total(url, "/healthz") < answered and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _scraped_total(url, "/healthz") == answered
        # Both workers wrote their values there (each made its metrics when it started).
        assert len(list(directory.glob("counter_*.db"))) == 2
    finally:
        stderr = started.stop()
    assert process.returncode == 0, stderr
    assert not directory.exists()  # the run's directory went with it


def test_several_workers_say_a_later_releases_schema_once(tmp_path: Path) -> None:
    """``serve --workers 2`` on a schema a later release migrated: each worker logged the
    warning (and the settings' warnings) again, one copy per worker; `serve` now says them
    once for all."""
    import sqlite3

    database = tmp_path / "taskflow-link.db"
    env = _environment(
        tmp_path,
        TASKFLOW_LINK_STORAGE="sql",
        TASKFLOW_LINK_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        TASKFLOW_LINK_REDIS_URL="redis://127.0.0.1:1/0",  # unreachable: each uses its memory
        TASKFLOW_LINK_EMAIL_BACKEND="smtp",
        TASKFLOW_LINK_SMTP_HOST="127.0.0.1",
    )
    command = "from entrypoints.cli import main; main()"
    migrated = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-c", command, "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    connection.close()
    warning = "a later release migrated it. This version serves on it"

    def both_started(started: Started) -> bool:
        said = started.said()
        return said.count("Application startup complete") >= 2 and warning in said

    started = _started(tmp_path, env, "--workers", "2", ready=both_started)
    said = started.stop()
    assert started.process.returncode == 0, said
    assert said.count(warning) == 1, said


def test_serve_makes_no_websocket_upgrade(tmp_path: Path) -> None:
    """The app has no WebSocket route (the emulator's gateway is the emulator's server's):
    ``serve`` makes no upgrade, where uvicorn made one for any path (wsproto is installed, for
    the emulator) and handed the app a WebSocket to refuse. Answered as a plain request, its
    connection closed (an upgrade not made)."""
    started = _started(tmp_path, _environment(tmp_path))
    try:
        host, port = started.url.removeprefix("http://").split(":")
        upgrade = (
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            conn.sendall(upgrade)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := conn.recv(65536):
                    answer += chunk
    finally:
        started.end()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"], answer
