"""The benchmark suite's smoke run (``make bench-smoke``) as CI makes it: a tiny data set,
about a second a row, on the test Postgres. It must complete and print its table.

Benchmarks are never timed tests: nothing here looks at a rate, a latency or a ratio, and an
unmet target does not fail the run (only something broken does: a server that does not start,
a request that fails).

The app runs from the environment the tests run in (the development install): `make bench` and
`make bench-smoke` run it from a runtime-only one (`make install-runtime`), which CI does not
build (about a minute on its machine). The report's header says which."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS = (
    "| what | app | compared with | ratio | target | met |",
    "lookup `GET /api/v1/links/{id}`, 32 connections: throughput",
    "lookup vs the guide's connect-per-call",
    "lookup p99 at 32 connections",
    "bulk lookup `POST /api/v1/links/lookup`",
    "Sign in with Discord, new users, 16 at a time",
    "/link over HTTP interactions, 64 concurrent, Postgres: throughput",
    "/link, 16 concurrent: SQLite p99 vs Postgres p99",
    "memory: idle RSS",
)


@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk (the benchmarks' load generator) is not installed: apt-get install wrk",
)
def test_benchmark_smoke_run_completes_and_prints_the_table(
    empty_pg_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "bench.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLOW_LINK_")}
    done = subprocess.run(  # noqa: S603 - our own command line
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--smoke",
            f"--database-url={empty_pg_url}",
            f"--output={output}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    for row in ROWS:
        assert row in done.stdout, f"no {row!r} in:\n{done.stdout}"
    assert "Problems" not in done.stdout
    assert " · app from a development install (" in done.stdout  # the header says which
    assert output.read_text().strip() == done.stdout.strip()
