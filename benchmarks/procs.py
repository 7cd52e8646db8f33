"""Server processes for the benchmark, and what /proc says about them (RSS, CPU time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port free now: another process may take it before a server binds it
    (``start_ready`` then starts the server on another)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# How many ports a server is started on before the run gives up (``start_ready``).
PORT_TRIES = 5


class PortTakenError(RuntimeError):
    """A server ended while starting because its port was in use: another process took it
    after ``free_port`` found it free."""


def port_was_taken(log: str) -> bool:
    """Whether a server's output says that its port was in use: ``serve``'s own check
    ("Port N on HOST is in use"), or the bind after it (uvicorn's, Python's)."""
    return " is in use" in log or "address already in use" in log.lower()


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (``/proc``: the
    listening sockets of the port, and the process's open files): not another process that
    took the port before it and answers there."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{inode}]")
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
    return False


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name (field 3 onwards)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of a process (all its threads), plus its reaped children's."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def tree_cpu_seconds(root: int) -> float:
    """A process, its live children and every child it already reaped (Postgres' postmaster
    and its backends, including the guide's short-lived ones)."""
    total = cpu_seconds(root, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(int(entry.name))
            if int(fields[1]) == root:
                total += cpu_seconds(int(entry.name), children=True)
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Server:
    """A server started by the benchmark, in its own process, logging to a file."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    async def wait_ready(self, path: str = "/healthz", *, within: float) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    failure = (
                        PortTakenError
                        if port_was_taken("\n".join(self.log_lines()))
                        else RuntimeError
                    )
                    raise failure(
                        f"{self.name} exited with {self.process.returncode} while starting:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(
                        self.url + path, timeout=aiohttp.ClientTimeout(total=2)
                    ) as answer:
                        # The answer of this server, not of one that took its port.
                        if answer.status == 200 and listens_on(self.pid, self.port):
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not answer {path} within {within:.0f} s:\n"
                        + self.log_tail()
                    )
                await asyncio.sleep(0.1)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def start_server(
    name: str,
    argv: list[str],
    *,
    port: int,
    env: Mapping[str, str],
    workdir: Path,
    cwd: Path | None = None,
) -> Server:
    """Start ``argv`` with the venv's Python first on PATH; the benchmark's own modules are
    importable (the repository is on PYTHONPATH) and nothing from the caller's
    ``TASKFLOW_LINK_*`` environment leaks in."""
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_LINK_")}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), child_env.get("PYTHONPATH", "")) if p
    )
    child_env.update(env)
    process = subprocess.Popen(  # noqa: S603 - our own command lines
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env,
        cwd=cwd or workdir,
    )
    return Server(name, f"http://127.0.0.1:{port}", port, process, log_path, log)


async def start_ready(
    name: str,
    argv: Callable[[int], list[str]],
    *,
    env: Mapping[str, str],
    workdir: Path,
    within: float,
    path: str = "/healthz",
) -> Server:
    """``start_server`` with ``argv(port)`` on a free port, ready (``path`` answers); started
    again on another port, up to ``PORT_TRIES`` in all, when another process took the port
    before the server bound it."""
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        server = start_server(name, argv(port), port=port, env=env, workdir=workdir)
        try:
            await server.wait_ready(path, within=within)
        except PortTakenError:
            server.stop()
            if attempt == PORT_TRIES:
                raise
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise AssertionError("unreachable")


def python_module(module: str, *args: str, python: Path | None = None) -> list[str]:
    """``python -m module``: this process's Python, or ``python`` (another venv's)."""
    return [str(python or sys.executable), "-m", module, *args]


def taskflow_link(*args: str, python: Path | None = None) -> list[str]:
    """The installed ``taskflow-link`` command of this venv, or of ``python``'s (same process
    id as its Python)."""
    python = python or Path(sys.executable)
    script = python.parent / "taskflow-link"
    if script.exists():
        return [str(script), *args]
    return [str(python), "-c", "from entrypoints.cli import main; main()", *args]


def describe_install(python: Path) -> str:
    """Which install ``python`` belongs to, for the report's header: runtime-only, or one with
    packages taskflow-link does not need (the dev extras), and how many packages it holds."""
    done = subprocess.run(  # noqa: S603 - our own command line
        [str(python), "-I", str(REPO / "benchmarks" / "install.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    venv = python.parent.parent
    with contextlib.suppress(ValueError):
        venv = venv.relative_to(REPO)
    where = f"`{venv}`: {found['packages']} packages"
    if not found["installed"]:
        return f"app from {where}, without taskflow-link installed (its code from PYTHONPATH)"
    if found["beyond"]:
        return (
            f"app from a development install ({where}, {len(found['beyond'])} of them not "
            "needed by the app: not what a deployment runs)"
        )
    return f"app from a runtime-only install ({where}, only what the app needs, as deployed)"
