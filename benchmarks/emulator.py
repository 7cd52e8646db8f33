"""The Discord emulator for the benchmark, with keys chosen by ``run.py`` (``taskflow-link
emulator`` makes its own and only prints them).

One change, unless ``--as-shipped``: the emulator sends each interaction with a new
``httpx.AsyncClient``, and building one (its TLS context) costs about 40 ms of CPU, more than
the app spends on a /link; one shared httpx client is no cure either, as its pool scans every
connection for each request (~10 ms of CPU per interaction at 64 at a time). Here interactions
go out through one aiohttp session instead, so that the /link rows measure the app rather than
the stand-in for Discord. Same request, same signature, same answer to the test API.

``python -m benchmarks.emulator --port PORT --app-url URL``; the signing key's seed (hex),
the bot token and the OAuth client secret come in ``BENCH_EMULATOR_SEED``,
``BENCH_EMULATOR_BOT_TOKEN`` and ``BENCH_EMULATOR_CLIENT_SECRET``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import aiohttp
import httpx
import uvicorn
from nacl.signing import SigningKey

from entrypoints.emulator import EmulatorState, bot_api, create_emulator_app

CLIENT_ID = "1100000000000000777"
log = logging.getLogger("benchmarks.emulator")


def send_through_one_session() -> None:
    """Replace ``bot_api.deliver`` by the same signed POST through one aiohttp session."""
    sessions: list[aiohttp.ClientSession] = []

    async def deliver(
        state: EmulatorState, payload: dict[str, Any], *, forged: bool = False
    ) -> httpx.Response:
        if not state.interactions_url:
            raise LookupError("no interactions URL is configured for this application")
        if not sessions:
            sessions.append(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    timeout=aiohttp.ClientTimeout(total=max(10.0, state.response_deadline + 5)),
                )
            )
        body = json.dumps(payload).encode()
        headers = bot_api.signed_headers(state, body, forged=forged)
        try:
            async with sessions[0].post(
                state.interactions_url, data=body, headers=headers
            ) as answer:
                content = await answer.read()
                return httpx.Response(
                    answer.status, headers=list(answer.headers.items()), content=content
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("sending an interaction failed: %s: %s", type(exc).__name__, exc)
            # What the emulator catches (it answers 502 "could not reach the service").
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc

    bot_api.deliver = deliver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app-url", required=True, help="the web app this emulator serves")
    parser.add_argument(
        "--response-deadline",
        type=float,
        default=3.0,
        help="seconds an interaction's answer is still taken (Discord: 3)",
    )
    parser.add_argument(
        "--as-shipped",
        action="store_true",
        help="send each interaction with a new HTTP client, as the emulator does",
    )
    args = parser.parse_args()
    if not args.as_shipped:
        send_through_one_session()
    state = EmulatorState(
        CLIENT_ID,
        os.environ["BENCH_EMULATOR_CLIENT_SECRET"],
        {f"{args.app_url}/auth/discord/callback"},
        bot_token=os.environ["BENCH_EMULATOR_BOT_TOKEN"],
        signing_key=SigningKey(bytes.fromhex(os.environ["BENCH_EMULATOR_SEED"])),
        response_deadline=args.response_deadline,
    )
    state.interactions_url = f"{args.app_url}/interactions"
    from entrypoints.http11 import BoundedHttpToolsProtocol  # noqa: PLC0415 - serving only

    uvicorn.run(
        create_emulator_app(state),
        host=args.host,
        port=args.port,
        http=BoundedHttpToolsProtocol,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
