"""The benchmark's servers on ports another process may take between ``free_port`` and the
server's bind (CI runs the smoke run beside the tests): such a server is started again on
another port, and an answer of the process that took its port is never taken for its own."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from benchmarks import postgres, procs

WITHIN = 120.0  # a deadline only: both cores may be busy


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def taken() -> Iterator[int]:
    """A port taken by another server (here, in the test's process), answering 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _web(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


async def test_another_servers_answer_on_the_port_is_not_taken_for_ready(
    taken: int, tmp_path: Path
) -> None:
    server = procs.start_server("web", _web(taken), port=taken, env={}, workdir=tmp_path)
    try:
        with pytest.raises(procs.PortTakenError):
            await server.wait_ready("/", within=WITHIN)
    finally:
        server.stop()


async def test_a_server_whose_port_was_taken_starts_on_another(
    taken: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([taken, taken])  # twice found free, then what is free
    free_port = procs.free_port
    monkeypatch.setattr(procs, "free_port", lambda: next(ports, None) or free_port())
    server = await procs.start_ready("web", _web, env={}, workdir=tmp_path, within=WITHIN, path="/")
    try:
        assert server.port != taken
        assert server.alive()
        assert procs.listens_on(server.pid, server.port)
    finally:
        server.stop()


async def test_the_start_gives_up_after_its_tries(
    taken: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procs, "free_port", lambda: taken)
    with pytest.raises(procs.PortTakenError):
        await procs.start_ready("web", _web, env={}, workdir=tmp_path, within=WITHIN, path="/")


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    """A directory the ``postgres`` user can reach (pytest's ``tmp_path`` sits under a root-only
    one), as the benchmark's own."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("no initdb/pg_ctl")
    directory = Path(tempfile.mkdtemp(prefix="taskflow-link-bench-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_postgres_whose_port_was_taken_starts_on_another(
    taken: int, postgres_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([taken, taken])  # twice found free, then what is free
    free_port = procs.free_port
    monkeypatch.setattr(postgres, "free_port", lambda: next(ports, None) or free_port())
    server = postgres.LocalPostgres(postgres_dir)
    try:
        assert server.port != taken
        assert procs.listens_on(server.postmaster_pid(), server.port)
    finally:
        server.stop()


def test_postgres_gives_up_after_its_tries(
    taken: int, postgres_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "free_port", lambda: taken)
    with pytest.raises(procs.PortTakenError):
        postgres.LocalPostgres(postgres_dir)
