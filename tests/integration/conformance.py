"""Schemathesis against a live app, as CI runs it: the OpenAPI schema must tell the truth.

Every check schemathesis has (server errors, status codes, response bodies against their
schemas, content types, headers, Allow on 405s and OPTIONS, requests that should be refused
or accepted, authentication that must not be ignored), through its command line, in a run that
is the same every time (derandomized) and bounded by a number of examples per operation, not
by time: on a busy two-core machine the whole set takes a few minutes.

A test's runs (with a key, without one...) go at once (``run_schemathesis_at_once``) against
its one server: each case waits on its answers far more than it computes (a run of 723 cases
took 55 s of wall time and a few seconds of CPU), so side by side they take about as long as
the longest of them. The same cases, the same checks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from domain.model import AccountId, DiscordId, Link
from domain.ports import UnitOfWorkFactory
from entrypoints.web.api import ACCOUNT_ID_EXAMPLE, DISCORD_ID_EXAMPLE
from tests.contracts.repositories import NOW, account

_SCHEMATHESIS = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
_SUMMARY = re.compile(r"(\d+) generated, (\d+) passed")


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def generated(self) -> int:
        found = _SUMMARY.search(self.output)
        return int(found.group(1)) if found else 0

    def explain(self) -> str:
        return self.output[-20_000:]  # the failures and the summary come last


def run_schemathesis(
    app_url: str,
    cwd: Path,
    *,
    examples: int,
    headers: tuple[str, ...] = (),
    only_method: str | None = None,
) -> Run:
    command = [
        sys.executable,
        "-c",
        _SCHEMATHESIS,
        "--no-color",
        "run",
        f"{app_url}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--generation-deterministic",  # the same cases every run (and no example database)
        "--seed",
        "20261122",
        "--continue-on-failure",  # every failure in one report
        "--workers",
        "1",
        "--request-timeout",
        "60",  # a busy machine is slow, not wrong
        "--suppress-health-check",
        "all",  # Hypothesis' "too slow" would judge the machine's speed
    ]
    for header in headers:
        command += ["--header", header]
    if only_method is not None:
        command += ["--include-method", only_method]
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        command, capture_output=True, text=True, cwd=cwd, timeout=1800, check=False
    )
    return Run(done.returncode, done.stdout + done.stderr)


@dataclass(frozen=True)
class Options:
    examples: int
    headers: tuple[str, ...] = field(default=())
    only_method: str | None = None


def run_schemathesis_at_once(
    app_url: str, cwd: Path, runs: Mapping[str, Options]
) -> dict[str, Run]:
    """``run_schemathesis`` for each of ``runs``, all at once, each in its own directory
    under ``cwd``; their results by the same names."""
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = {}
        for number, (name, options) in enumerate(runs.items()):
            directory = cwd / f"run-{number}"
            directory.mkdir()
            futures[name] = pool.submit(
                run_schemathesis,
                app_url,
                directory,
                examples=options.examples,
                headers=options.headers,
                only_method=options.only_method,
            )
        return {name: future.result() for name, future in futures.items()}


async def link_the_examples(uow: UnitOfWorkFactory) -> None:
    """The ids the schema shows as examples exist, so that an example call can get a 200
    (and a DELETE with a key allowed to write really unlinks)."""
    owner = replace(
        account("example", "example@example.com"), id=AccountId.parse(ACCOUNT_ID_EXAMPLE)
    )
    async with uow() as work:
        await work.accounts.add(owner)
        await work.links.add(Link(DiscordId.parse(DISCORD_ID_EXAMPLE), owner.id, NOW, "example"))
        await work.commit()
