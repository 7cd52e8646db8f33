"""The OpenAPI schema tells the truth: schemathesis, with every check, against the live app
on Postgres (uvicorn, real HTTP, HTTP interactions on, the Discord emulator), with a key that
may read and write, without a key, and with a key that may only read on the route that
writes. Zero failures."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conformance import link_the_examples, run_schemathesis
from tests.integration.stack import Stack


async def test_the_schema_agrees_with_every_answer(stack: Stack, tmp_path: Path) -> None:
    await link_the_examples(stack.container.uow())
    both = await stack.container.create_api_key().execute(
        "conformance", ["links:read", "links:write"]
    )
    reader = await stack.container.create_api_key().execute("conformance-reader")

    runs = {
        "a key with both scopes": run_schemathesis(
            stack.app_url, tmp_path, examples=150, headers=(f"Authorization: Bearer {both.token}",)
        ),
        "no key": run_schemathesis(stack.app_url, tmp_path, examples=40),
        "a read-only key, on DELETE": run_schemathesis(
            stack.app_url,
            tmp_path,
            examples=40,
            headers=(f"Authorization: Bearer {reader.token}",),
            only_method="DELETE",
        ),
    }
    for name, run in runs.items():
        assert run.returncode == 0, f"with {name}:\n{run.explain()}"
        assert run.generated >= 40, f"with {name}:\n{run.explain()}"
