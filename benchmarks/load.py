"""Load: ``wrk`` (its own process) for the API, and closed-loop asyncio drivers (aiohttp) for
the flows wrk cannot do (Sign in with Discord, /link through the emulator, mixed requests)."""

from __future__ import annotations

import asyncio
import html
import math
import os
import random
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

from benchmarks.postgres import FIRST_DISCORD_ID

HERE = Path(__file__).resolve().parent
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = re.compile(r"([\d.]+)(us|ms|s|m|h)$")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Measured:
    """One measurement: a rate, latencies in milliseconds, and what went wrong."""

    label: str
    requests: int
    seconds: float
    p50: float
    p90: float
    p99: float
    max: float
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per request, by process
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- wrk ------------------------------------------------------------------------------------------


def _ms(text: str) -> float:
    found = _DURATION.match(text.strip())
    if not found:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(label: str, output: str) -> Measured:
    def grab(pattern: str) -> re.Match[str]:
        found = re.search(pattern, output, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"wrk printed no {pattern!r}:\n{output}")
        return found

    latency = {
        int(p): _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.MULTILINE)
    }
    requests = int(grab(r"^\s+(\d+) requests in ([\d.]+\w+)").group(1))
    seconds = _ms(grab(r"^\s+\d+ requests in ([\d.]+\w+)").group(1)) / 1000
    max_latency = _ms(grab(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)").group(1))
    errors, problems = 0, []
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(found.group(1))
        problems.append(f"{found.group(1)} answers were not 2xx/3xx")
    if found := re.search(r"Socket errors: (.*)$", output, re.MULTILINE):
        counts = [int(n) for n in re.findall(r"\d+", found.group(1))]
        if sum(counts):
            errors += sum(counts)
            problems.append(f"socket errors: {found.group(1)}")
    return Measured(
        label,
        requests,
        seconds,
        latency.get(50, math.nan),
        latency.get(90, math.nan),
        latency.get(99, math.nan),
        max_latency,
        errors,
        problems,
    )


def run_wrk(
    label: str,
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    env: Mapping[str, str],
    timeout: float = 10.0,
) -> Measured:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout))}s",
        "--latency",
        "-s",
        str(HERE / script),
        url,
    ]
    done = subprocess.run(  # noqa: S603 - wrk with our arguments
        argv, capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return parse_wrk(label, done.stdout)


# -- closed-loop drivers --------------------------------------------------------------------------

Call = Callable[[aiohttp.ClientSession, int], Awaitable["Outcome"]]


@dataclass
class Outcome:
    ok: bool
    problem: str = ""
    reply_ms: float | None = None  # /link: when Discord got the reply, as the emulator saw it
    late: bool = False


async def drive(
    label: str,
    call: Call,
    *,
    workers: int,
    seconds: float,
    limit: int | None = None,
    request_timeout: float = 30.0,
) -> Measured:
    """``workers`` concurrent loops calling ``call`` (each with its own session, i.e. its own
    cookies and connections) until ``seconds`` are up or ``limit`` calls were started.
    Latency is measured around each call; the rate counts completed calls over the time
    until the last one ended."""
    latencies: list[float] = []
    reply_ms: list[float] = []
    errors, late = 0, 0
    problems: list[str] = []
    started = 0
    deadline = time.perf_counter() + seconds
    jar_kind = aiohttp.CookieJar

    async def worker(number: int) -> None:
        nonlocal errors, late, started
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(
            connector=connector,
            cookie_jar=jar_kind(unsafe=True),  # cookies for 127.0.0.1
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        ) as session:
            while time.perf_counter() < deadline and (limit is None or started < limit):
                started += 1
                t0 = time.perf_counter()
                try:
                    outcome = await call(session, number)
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
                    outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
                elapsed = (time.perf_counter() - t0) * 1000
                if not outcome.ok:
                    errors += 1
                    if len(problems) < 5:
                        problems.append(outcome.problem)
                    continue
                latencies.append(elapsed)
                if outcome.reply_ms is not None:
                    reply_ms.append(outcome.reply_ms)
                late += outcome.late

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    seconds_taken = time.perf_counter() - t0
    measured = Measured(
        label,
        len(latencies),
        seconds_taken,
        percentile(latencies, 0.50),
        percentile(latencies, 0.90),
        percentile(latencies, 0.99),
        max(latencies, default=math.nan),
        errors,
        problems,
    )
    if reply_ms:
        measured.extra.update(
            reply_p50=percentile(reply_ms, 0.50),
            reply_p99=percentile(reply_ms, 0.99),
            reply_max=max(reply_ms),
        )
    measured.extra["late"] = late
    return measured


# -- the flows ------------------------------------------------------------------------------------

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def random_link_path(links: int) -> str:
    return f"/api/v1/links/{FIRST_DISCORD_ID + random.randint(1, links)}"  # noqa: S311


def mixed_call(app_url: str, api_key: str, links: int) -> Call:
    """Mostly lookups, with the sign-in page and the health check now and then."""
    headers = {"Authorization": f"Bearer {api_key}"}
    counter = [0]

    async def call(session: aiohttp.ClientSession, _: int) -> Outcome:
        counter[0] += 1
        turn = counter[0] % 10
        sent: dict[str, str] = {}
        if turn == 0:
            path = "/signin"
        elif turn == 5:
            path = "/healthz"
        else:
            path, sent = random_link_path(links), headers
        async with session.get(app_url + path, headers=sent) as answer:
            await answer.read()
            if answer.status != 200:
                return Outcome(False, f"GET {path}: {answer.status}")
        return Outcome(True)

    return call


async def _expect_redirect(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> str:
    async with session.request(method, url, allow_redirects=False, **kwargs) as answer:
        body = await answer.read()
        if answer.status not in (302, 303):
            raise ValueError(f"{method} {urlsplit(url).path}: {answer.status} {body[:200]!r}")
        return urljoin(url, answer.headers["location"])


async def sign_in_with_discord(
    session: aiohttp.ClientSession,
    app_url: str,
    emulator_url: str,
    user_id: str,
    *,
    show_consent_page: bool,
) -> Outcome:
    """A new browser signs in with Discord as a new Discord user: the app's login start,
    Discord's consent (Authorize as ``user_id``), the app's callback. The consent page lists
    every test user the emulator has (thousands here), so it is fetched only when asked
    (once per worker, to check that it is shown, and then the account page too); otherwise
    the form it holds (the authorize request's parameters) is posted straight away, as the
    page would."""
    session.cookie_jar.clear()
    authorize = await _expect_redirect(session, "GET", f"{app_url}/auth/discord/login")
    if urlsplit(authorize).path != "/oauth2/authorize" or not authorize.startswith(emulator_url):
        return Outcome(False, f"login start went to {authorize}, not the emulator")
    fields = dict(parse_qsl(urlsplit(authorize).query))
    if show_consent_page:
        async with session.get(authorize, allow_redirects=False) as page:
            text = await page.text()
            if page.status != 200 or f'value="{user_id}"' not in text:
                return Outcome(False, f"no consent page for a new user ({page.status})")
            fields = {k: html.unescape(v) for k, v in HIDDEN.findall(text)}
    fields |= {"user_id": user_id, "decision": "approve"}
    callback = await _expect_redirect(
        session, "POST", f"{emulator_url}/oauth2/authorize", data=fields
    )
    if not callback.startswith(f"{app_url}/auth/discord/callback"):
        return Outcome(False, f"Discord sent the browser to {callback}")
    async with session.get(callback, allow_redirects=False) as answer:
        body = await answer.read()
        cookies = answer.headers.getall("set-cookie", [])
        if answer.status != 302 or answer.headers.get("location") != "/account":
            return Outcome(False, f"callback: {answer.status} {body[:200]!r}")
        if not any(c.startswith(("tfl_session=", "__Host-tfl_session=")) for c in cookies):
            return Outcome(False, "callback set no session cookie")
    if show_consent_page:  # and once per browser: the account page shows the new account
        async with session.get(f"{app_url}/account", allow_redirects=False) as page:
            text = await page.text()
            if page.status != 200 or "Sign out" not in text:
                return Outcome(False, f"not signed in after the callback ({page.status})")
    return Outcome(True)


async def create_emulator_users(
    emulator_url: str, prefix: str, count: int, *, verified_email: bool
) -> list[str]:
    """``count`` new test users (unique names and emails), created 16 at a time."""
    ids: list[str] = [""] * count
    queue = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in queue:
            body = {
                "username": f"{prefix}{i}",
                "global_name": f"{prefix.title()} {i}",
                "email": f"{prefix}{i}@bench.example.com",
                "verified": verified_email,
            }
            async with session.post(f"{emulator_url}/_emulator/users", json=body) as answer:
                created = await answer.json()
                if answer.status != 201 or "id" not in created:
                    raise RuntimeError(f"emulator refused a test user: {created}")
                ids[i] = created["id"]

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(16)))
    return ids


def slash_link_call(
    emulator_url: str, users: Sequence[str], fallback_text: str, *, late_is_error: bool
) -> Call:
    """``/link`` as a test user: the emulator signs the interaction, posts it to the app's
    /interactions and waits for the reply (which the app sends through the emulator's
    callback endpoint). A reply Discord would not have taken (after its deadline) or the
    app's "something went wrong" fallback (its own deadline) counts as late."""
    turns = [0]

    async def call(session: aiohttp.ClientSession, _: int) -> Outcome:
        turns[0] += 1
        user = users[turns[0] % len(users)]
        body = {"user_id": user, "command": "link"}
        async with session.post(f"{emulator_url}/_emulator/interactions", json=body) as answer:
            result = await answer.json()
        if answer.status != 200:
            return Outcome(False, f"emulator: {answer.status} {result}")
        reply = result.get("reply")
        data = (reply or {}).get("data") or {}
        in_time = result.get("status") in (200, 204)
        fallback = data.get("content") == fallback_text
        if reply is None and result.get("status") is not None:
            return Outcome(False, f"no reply: {result}")
        if (not in_time or fallback) and late_is_error:
            return Outcome(False, f"late or fallback reply: {result}")
        if not fallback and reply is not None and not data.get("components"):
            return Outcome(False, f"a /link reply without its button: {reply}")
        reply_ms = result.get("responded_after_ms")
        return Outcome(
            True,
            reply_ms=float(reply_ms) if reply_ms is not None else None,
            late=not in_time or fallback,
        )

    return call
