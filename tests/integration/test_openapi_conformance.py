"""The OpenAPI schema tells the truth: schemathesis, with every check, against the live app
on Postgres (uvicorn, real HTTP, HTTP interactions on, the Discord emulator), with a key that
may read and write, without a key, and with a key that may only read on the route that
writes. Zero failures."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conformance import Options, link_the_examples, run_schemathesis_at_once
from tests.integration.stack import Stack


async def test_the_schema_agrees_with_every_answer(stack: Stack, tmp_path: Path) -> None:
    await link_the_examples(stack.container.uow())
    both = await stack.container.create_api_key().execute(
        "conformance", ["links:read", "links:write"]
    )
    reader = await stack.container.create_api_key().execute("conformance-reader")

    runs = run_schemathesis_at_once(
        stack.app_url,
        tmp_path,
        {
            "a key with both scopes": Options(150, (f"Authorization: Bearer {both.token}",)),
            "no key": Options(40),
            "a read-only key, on DELETE": Options(
                40, (f"Authorization: Bearer {reader.token}",), only_method="DELETE"
            ),
        },
    )
    for name, run in runs.items():
        assert run.returncode == 0, f"with {name}:\n{run.explain()}"
        assert run.generated >= 40, f"with {name}:\n{run.explain()}"
