"""The app factory (``entrypoints.asgi:make_app``) under each ASGI server the README names,
started exactly as documented there, as separate processes: each serves pages and answers
``/readyz``, and believes no client's X-Forwarded-For that the app does not."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.signing
import pytest

from tests.integration.instances import environment
from tests.integration.waiting import NotReadyInTime, until_ready
from tests.servers import PORT_TRIES, free_port, port_was_taken

BIN = Path(sys.executable).parent


def _commands(port: int) -> dict[str, list[str]]:
    where = ["--host", "127.0.0.1", "--port", str(port)]
    return {
        "uvicorn": [
            str(BIN / "uvicorn"),
            "--factory",
            "entrypoints.asgi:make_app",
            *where,
            "--workers",
            "2",
            "--no-proxy-headers",
            "--ws",
            "none",
            "--http",
            "entrypoints.http11:BoundedHttpToolsProtocol",
        ],
        "gunicorn": [
            str(BIN / "gunicorn"),
            "-k",
            "entrypoints.gunicorn_worker.UvicornWorker",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--forwarded-allow-ips=",
            "entrypoints.asgi:make_app()",
        ],
        "granian": [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--factory",
            "--workers",
            "2",
            *where,
            "entrypoints.asgi:make_app",
        ],
    }


@contextlib.contextmanager
def _running(
    command: list[str], env: dict[str, str], cwd: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = cwd / "server.log"
    with log.open("wb") as sink:
        # A session of its own: the server's worker processes are stopped with it (a granian
        # worker outlived its master when only the master was signalled).
        process = subprocess.Popen(  # noqa: S603
            command, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left


def _first_answer(url: str, process: subprocess.Popen[bytes]) -> httpx.Response | None:
    """The server's first answer at /readyz; ``None`` if it ended or never answered. The
    process is checked before and after each try: a server of another process that took the
    port answers there for one that ended."""
    answers: list[httpx.Response] = []

    def answered() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            answers.append(httpx.get(f"{url}/readyz", timeout=5))
        return bool(answers)

    with contextlib.suppress(NotReadyInTime):
        if until_ready(process, answered):
            return answers[0]
    return None


@contextlib.contextmanager
def _serving(
    server: str, env: dict[str, str], cwd: Path
) -> Iterator[tuple[str, httpx.Response, Path]]:
    """``server`` on a free port, answering: its URL, its first answer at /readyz and its log.
    A port found free that another process took before the server bound it (both cores busy,
    other test runs) is picked again."""
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        with _running(_commands(port)[server], env, cwd) as (process, log):
            ready = _first_answer(f"http://127.0.0.1:{port}", process)
            if ready is None:
                said = log.read_text(errors="replace")
                if process.poll() is not None and port_was_taken(said) and attempt < PORT_TRIES:
                    continue
                pytest.fail(f"{server} did not answer /readyz:\n{said}")
            yield f"http://127.0.0.1:{port}", ready, log
            return


def _environment(sqlite_url: str) -> dict[str, str]:
    return environment(
        database_url=sqlite_url,
        readiness_timeout_seconds=30,  # its first checks open the database: a busy machine
        discord_client_id="1200000000000000042",
        discord_client_secret="unused-here",
    )


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database whose schema the release step made (``db upgrade``), once for the
    module: each test serves a copy of its own."""
    directory = tmp_path_factory.mktemp("release")
    database = directory / "taskflow-link.db"
    migrated = subprocess.run(
        [sys.executable, "-c", "from entrypoints.cli import main; main()", "db", "upgrade"],
        env=_environment(f"sqlite+aiosqlite:///{database}"),
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    return database


def _migrated(directory: Path, migrated_database: Path) -> dict[str, str]:
    """The servers' environment, on a copy of the migrated database in ``directory``."""
    for made in migrated_database.parent.glob(f"{migrated_database.name}*"):  # (and its WAL)
        shutil.copyfile(made, directory / made.name)
    return _environment(f"sqlite+aiosqlite:///{directory / migrated_database.name}")


def _statuses(url: str, raw: bytes) -> list[bytes]:
    """The status codes the server answered ``raw`` with, in order, once it closed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        with contextlib.suppress(OSError):  # refused mid-send: the answer is still read
            conn.sendall(raw)
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "granian"])
def test_every_documented_asgi_server_loads_the_factory(
    server: str, tmp_path: Path, migrated_database: Path
) -> None:
    env = _migrated(tmp_path, migrated_database)
    with _serving(server, env, tmp_path) as (url, ready, log):
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "schema": "ok"}
        # From a peer TASKFLOW_LINK_FORWARDED_ALLOW_IPS does not name (it names none here):
        # its X-Forwarded-For is not believed, by the app nor by the server (uvicorn's and
        # gunicorn's believe 127.0.0.1's unless told otherwise).
        page = httpx.get(f"{url}/signin", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=60)
        assert page.status_code == 200
        assert "Sign in" in page.text
        # One-time secrets in a path and a query: only the app's own access log may write
        # these requests (redacted), never the server's.
        httpx.get(f"{url}/password/reset/SECRET-in-path", timeout=60)
        httpx.get(f"{url}/auth/discord/callback?code=SECRET-code&state=SECRET-state", timeout=60)
    written = log.read_text(errors="replace")
    assert "GET /signin 200" in written  # the app's access log, so the log is complete
    assert "127.0.0.1 GET /signin 200" in written
    assert "203.0.113.9" not in written
    assert "SECRET" not in written, written
    # Every line the server's own formatter writes can be written: gunicorn's "[%(process)d]"
    # failed at every line of its workers once the app's logging had turned process ids off.
    assert "Logging error" not in written, written


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_uvicorn_and_gunicorn_as_documented_bound_a_request_head(
    server: str, tmp_path: Path, migrated_database: Path
) -> None:
    """The README's uvicorn and gunicorn commands serve with the protocol ``serve`` does
    (``entrypoints/http11.py``), not uvicorn's own httptools code, which kept a request's head
    whatever its size: a 100 KiB head gets a 400."""
    env = _migrated(tmp_path, migrated_database)
    with _serving(server, env, tmp_path) as (url, _, _):
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        big = b"X-Big: " + b"a" * (100 * 1024) + b"\r\n"
        assert _statuses(url, head + big + b"\r\n") == [b"400"]
        # A large head within the bound (cookies, say) is served.
        fair = b"Cookie: " + b"c" * 12_000 + b"\r\nConnection: close\r\n"
        assert _statuses(url, head + fair + b"\r\n") == [b"200"]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_uvicorn_and_gunicorn_as_documented_make_no_websocket_upgrade(
    server: str, tmp_path: Path, migrated_database: Path
) -> None:
    """The app has no WebSocket route: the README's uvicorn (``--ws none``) and gunicorn
    commands make no upgrade, where uvicorn made one (wsproto is installed, for the
    emulator) and handed the app a WebSocket to refuse. Answered as a plain request."""
    env = _migrated(tmp_path, migrated_database)
    with _serving(server, env, tmp_path) as (url, _, _):
        upgrade = (
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert _statuses(url, upgrade) == [b"200"]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_uvicorn_and_gunicorn_refuse_an_unsigned_interaction_before_its_body(
    server: str, tmp_path: Path, migrated_database: Path
) -> None:
    """``POST /interactions`` without its signature headers gets its 401 before its body is
    read, under the README's uvicorn and gunicorn commands too: the body that follows is
    never read as requests (it holds one), and the client's next request is answered, or the
    connection closed."""
    env = _migrated(tmp_path, migrated_database)
    env |= {
        "TASKFLOW_LINK_DISCORD_PUBLIC_KEY": nacl.signing.SigningKey.generate()
        .verify_key.encode()
        .hex(),
        "TASKFLOW_LINK_DISCORD_BOT_TOKEN": "unused-here",
        # Nothing answers there: the app starts without reaching Discord.
        "TASKFLOW_LINK_DISCORD_API_URL": f"http://127.0.0.1:{free_port()}/api/v10",
        "TASKFLOW_LINK_DISCORD_SYNC_COMMANDS": "false",
    }
    with _serving(server, env, tmp_path) as (url, _, _):
        host, port = url.removeprefix("http://").split(":")
        body = b"GET /smuggled-in-a-body HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".ljust(200_000)
        head = (
            b"POST /interactions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            conn.sendall(head + body[:10])  # its body barely begun
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := conn.recv(65536)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 401 "), answer
            with contextlib.suppress(OSError):  # closed after its 401: fine too
                conn.sendall(body[10:])
                conn.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                while chunk := conn.recv(65536):
                    answer += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) in ([b"401"], [b"401", b"200"]), answer
