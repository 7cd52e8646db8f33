"""The deployment files cannot drift from the code: ``.env.example`` and the README's
configuration table name exactly the settings that exist (with their defaults), and every
command the Dockerfile and compose.yaml run is a real CLI command (with real options), every
health check a real route. The images cannot be built here (no Docker Hub), so this is what
can be checked."""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import SecretStr

from entrypoints.cli import cli
from entrypoints.container import build_container
from entrypoints.settings import ENV_PREFIX, Settings
from entrypoints.web import create_app
from tests.harness import TEST_SECRET_KEY, make_settings

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = re.compile(r"^(?P<commented># ?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
# Names in .env.example that are not settings of the service: what compose.yaml interpolates.
COMPOSE_VARIABLES = {"POSTGRES_PASSWORD"}


def _setting_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def _env_example() -> list[tuple[str, bool, str, str]]:
    """(name, commented out, value, the comment line above) for each assignment."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        if match := ASSIGNMENT.match(line):
            above = lines[number - 1] if number else ""
            found.append((match["name"], bool(match["commented"]), match["value"], above))
    return found


def _resolve(argv: list[str]) -> click.Command:
    """The CLI command ``argv`` runs, its options parsed and checked as click would (without
    running it); fails for an unknown command or option or a bad value."""
    assert argv[0] == "taskflow-link", argv
    command: click.Command = cli
    name, args, parent = "taskflow-link", argv[1:], None
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        context = click.Context(command, info_name=name, parent=parent)
        sub = command.get_command(context, args[0])
        assert sub is not None, f"{argv}: no command {args[0]!r} in {context.command_path}"
        parent, command, name, args = context, sub, args[0], args[1:]
    command.make_context(name, args, parent=parent)
    return command


def _routes() -> set[str]:
    app = create_app(build_container(make_settings()))
    return {route.path for route in app.routes}


def _health_paths(test: list[str]) -> list[str]:
    return re.findall(r"http://127\.0\.0\.1:8000(/[a-z]+)", " ".join(test))


# -- .env.example -----------------------------------------------------------------------------


def test_env_example_names_exactly_the_settings_that_exist() -> None:
    named = [name for name, *_ in _env_example()]
    assert len(named) == len(set(named)), "a name appears twice"
    settings = {n for n in named if n.startswith(ENV_PREFIX)}
    assert sorted(_setting_names() - settings) == [], "settings missing from .env.example"
    assert sorted(settings - _setting_names()) == [], "not settings (any more?)"
    assert set(named) - settings == COMPOSE_VARIABLES


def test_env_example_explains_each_setting_and_leaves_secrets_blank() -> None:
    secrets = {
        ENV_PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
    }
    assert ENV_PREFIX + "METRICS_TOKEN" in secrets
    for name, _, value, above in _env_example():
        assert above.startswith("# "), f"{name}: no comment above it"
        assert not ASSIGNMENT.match(above), f"{name}: no comment above it"
        if name in secrets or name in COMPOSE_VARIABLES:
            assert value == "", f"{name} is a secret: leave it blank"


def test_env_example_is_a_valid_configuration_once_the_secret_key_is_set() -> None:
    settings = Settings(_env_file=str(ROOT / ".env.example"), secret_key=TEST_SECRET_KEY)
    assert str(settings.public_url) == "http://127.0.0.1:8000/"
    # The required Discord settings are there, blank: `serve` names them until they are filled.
    with pytest.raises(Exception, match="TASKFLOW_LINK_DISCORD_CLIENT_ID"):
        settings.require("discord_client_id", "discord_client_secret")


def test_env_example_works_with_the_emulator_as_it_starts() -> None:
    """Found by helper-63's review: .env.example's public URL was http://localhost:8000, the
    emulator registers the default's callback only, so "Trying it by hand" with a copy of it
    ended at "Invalid OAuth2 redirect_uri"."""
    settings = Settings(_env_file=str(ROOT / ".env.example"), secret_key=TEST_SECRET_KEY)
    assert settings.public_url == Settings.model_fields["public_url"].default
    emulator = _resolve(["taskflow-link", "emulator"])
    (redirect_uris,) = [p.default for p in emulator.params if p.name == "redirect_uris"]
    callback = str(settings.public_url).rstrip("/") + "/auth/discord/callback"
    assert redirect_uris == [callback]


def test_env_example_shows_the_real_defaults() -> None:
    """A commented-out line says what the setting is when left alone: it must be true."""
    shown = 0
    for name, commented, value, _ in _env_example():
        if commented and value and name.startswith(ENV_PREFIX):
            field = name.removeprefix(ENV_PREFIX).lower()
            parsed = Settings(_env_file=None, secret_key=TEST_SECRET_KEY, **{field: value})  # type: ignore[arg-type]
            assert getattr(parsed, field) == Settings.model_fields[field].default, name
            shown += 1
    assert shown > 30


def test_env_example_lines_uncommented_as_they_stand_keep_the_defaults() -> None:
    """A commented-out line "keeps the default shown", and for a setting that is unset by
    default the line shows it blank (``# TASKFLOW_LINK_REDIS_URL=``): uncommented as it
    stands (or written blank by Compose or ``docker run --env-file``), it must mean the
    same. Blank, four of them stopped every command (REDIS_URL "must start with redis://",
    DISCORD_PUBLIC_KEY "must be 64 hexadecimal characters", DISCORD_SHARD_COUNT "unable to
    parse string as an integer", METRICS_TOKEN "is empty")."""
    blank = [
        name.removeprefix(ENV_PREFIX).lower()
        for name, commented, value, _ in _env_example()
        if commented and not value and name.startswith(ENV_PREFIX)
    ]
    assert {"redis_url", "discord_public_key", "discord_shard_count", "metrics_token"} <= set(blank)
    for field in blank:
        parsed = Settings(_env_file=None, secret_key=TEST_SECRET_KEY, **{field: ""})  # type: ignore[arg-type]
        default = Settings.model_fields[field].default
        value = getattr(parsed, field)
        if isinstance(value, SecretStr):
            value, default = value.get_secret_value(), default.get_secret_value()
        assert value == default, field


# -- the README's configuration table ---------------------------------------------------------


def _readme_settings() -> dict[str, str]:
    """Each variable of the README's configuration table with the default its row states (a
    row naming two variables, ``A`` · ``_B``, states theirs in the same order)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for line in table.splitlines():
        if not line.startswith(f"| `{ENV_PREFIX}"):
            continue
        names_cell, default_cell = (cell.strip() for cell in line.split(" | ")[:2])
        names = re.findall(r"`(?:TASKFLOW_LINK)?(_[A-Z0-9_]+)`", names_cell)
        defaults = [d.strip() for d in default_cell.split(" · ")]
        for number, name in enumerate(names):
            found["TASKFLOW_LINK" + name] = defaults[min(number, len(defaults) - 1)]
    return found


def test_the_readme_table_names_exactly_the_settings_with_their_defaults() -> None:
    """The README's table is what an operator reads; nothing kept it in step with the code
    (only .env.example was): a default changed in one place would be wrong in the other."""
    stated = _readme_settings()
    assert sorted(stated) == sorted(_setting_names())
    for name, default in stated.items():
        field = name.removeprefix(ENV_PREFIX).lower()
        real = Settings.model_fields[field]
        if default.startswith("— (required)"):
            assert real.is_required(), name
            continue
        value = re.match(r"`([^`]*)`", default)
        if value is None:  # "unset", "empty (none)": what a blank value means
            assert default.split()[0] in {"unset", "empty"}, (name, default)
            written = ""
        else:
            written = value[1]
        parsed = Settings(_env_file=None, secret_key=TEST_SECRET_KEY, **{field: written})  # type: ignore[arg-type]
        shown, expected = getattr(parsed, field), real.default
        if isinstance(shown, SecretStr) and isinstance(expected, SecretStr):
            shown, expected = shown.get_secret_value(), expected.get_secret_value()
        assert shown == expected, (name, default)


# -- Dockerfile -------------------------------------------------------------------------------


def _dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments (continuation lines joined), in order."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            found.setdefault(instruction.upper(), []).append(rest.strip())
    return found


def test_dockerfile_builds_a_wheel_then_runs_it_as_a_user_without_privileges() -> None:
    docker = _dockerfile()
    assert docker["ARG"] == ["PYTHON_IMAGE=python:3.11-slim"]
    assert docker["FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    # The image's versions are the ones the tests ran with.
    assert any("constraints.txt" in copy.split() for copy in docker["COPY"])
    (wheel,) = [run for run in docker["RUN"] if "pip wheel" in run]
    assert "-c constraints.txt" in " ".join(wheel.split())
    assert any("--no-index" in run and "taskflow-link" in run for run in docker["RUN"])
    (user,) = docker["USER"]
    assert user.split(":")[0] not in ("root", "0")


def test_dockerfile_commands_are_real() -> None:
    docker = _dockerfile()
    (cmd,) = docker["CMD"]
    assert json.loads(cmd) == ["taskflow-link", "serve", "--host", "0.0.0.0"]  # noqa: S104
    assert _resolve(json.loads(cmd)).name == "serve"
    (healthcheck,) = docker["HEALTHCHECK"]
    test = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert test[:2] == ["python", "-c"]
    compile(test[2], "HEALTHCHECK", "exec")  # Python that parses
    assert _health_paths(test) == ["/healthz"]
    assert "/healthz" in _routes()


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:1] == ["*"]  # everything out, then what is needed
    assert {"!pyproject.toml", "!constraints.txt", "!README.md", "!LICENSE", "!src"} <= set(ignored)
    assert "!.env" not in ignored


# -- compose.yaml -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_sets_only_real_settings_and_runs_only_real_commands(
    compose: dict[str, Any],
) -> None:
    routes = _routes()
    commands = {}
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith(ENV_PREFIX):
                assert variable in _setting_names(), f"{name}: {variable} is not a setting"
        if "command" in service and service.get("build"):
            command = service["command"]
            argv = command if isinstance(command, list) else shlex.split(command)
            commands[name] = _resolve(argv).name
        test = service.get("healthcheck", {}).get("test", [])
        for path in _health_paths(test):
            assert path in routes, f"{name}: {path} is not a route"
    assert commands == {
        "migrate": "upgrade",
        "web-1": "serve",
        "web-2": "serve",
        "bot": "bot",
    }


def test_compose_migrates_once_before_anything_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16-alpine"
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["migrate"]["command"] == ["taskflow-link", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web-1", "web-2", "bot"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("web-1", "web-2"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
        assert services[name]["env_file"] == ".env"
    assert services["bot"]["profiles"] == ["bot"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]


def test_compose_interpolates_only_what_env_example_names(compose: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert interpolated == COMPOSE_VARIABLES


def test_every_script_the_docs_and_the_tests_name_exists() -> None:
    """The message a skipped Postgres test printed named a provision-test-postgres.sh script,
    which does not exist (the script is provision-test-images.sh)."""
    sources = [ROOT / "README.md", ROOT / ".ci" / "run", *(ROOT / "tests").rglob("*.py")]
    named = {
        (source.relative_to(ROOT), match)
        for source in sources
        for match in re.findall(r"scripts/[\w.-]+\.sh", source.read_text(encoding="utf-8"))
    }
    assert named
    assert [(str(s), m) for s, m in sorted(named) if not (ROOT / m).is_file()] == []


def test_no_file_holds_a_merge_conflict() -> None:
    """A rebase left the README's "A database that hangs" paragraph as both sides of a
    conflict, with the markers, in the committed file (and the package description built from
    it)."""
    markers = re.compile(r"^(<{7} |={7}$|>{7} )", re.MULTILINE)
    sources = [
        ROOT / "README.md",
        ROOT / ".env.example",
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "src").rglob("*.html"),
        *(ROOT / "tests").rglob("*.py"),
    ]
    assert [
        str(source.relative_to(ROOT))
        for source in sources
        if markers.search(source.read_text(encoding="utf-8"))
    ] == []


# -- the README's command lines ---------------------------------------------------------------


def _readme_command_lines() -> list[list[str]]:
    """Every ``taskflow-link …`` line of the README's shell examples (``sh`` and ``console``
    blocks), as given to run
    (``.venv/bin/taskflow-link``, ``$ taskflow-link``, in a ``docker run``)."""
    found: list[list[str]] = []
    block: str | None = None  # the language of the code block the line is in
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block not in {"sh", "console"} or not re.match(
            r"^(\$ )?[\w./ -]*taskflow-link [a-z]", line
        ):
            continue  # prose, a diagram, a program's output
        words = shlex.split(line, comments=True)
        for number, word in enumerate(words):
            following = words[number + 1] if number + 1 < len(words) else ""
            # (in a docker run, the image's name comes first, then the command)
            command = re.fullmatch(r"[a-z][a-z-]*", following) and following != "taskflow-link"
            if word.endswith("taskflow-link") and command:
                found.append(["taskflow-link", *words[number + 1 :]])
                break
    return found


def _readme_mentions() -> list[str]:
    """The README's inline ``taskflow-link …`` spans and the Command line table's synopses
    (``taskflow-link audit [--account ID \\| …] …``, ``api-key revoke NAME``)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| (`taskflow-link .*?) \| ", table, re.M)
    synopses = [part.strip("` ") for cell in cells for part in cell.split(" · ")]
    spans = re.findall(r"`(taskflow-link [a-z][^`]*)`", readme)
    return [s.replace("\\|", "|").removeprefix("taskflow-link ") for s in synopses + spans]


def test_every_command_line_of_the_readme_is_one_the_cli_takes() -> None:
    """An operator copies these: an option renamed in the code (or misspelt in the README)
    would stop their first try with a usage error."""
    lines = _readme_command_lines()
    assert len(lines) > 10, lines
    for argv in lines:
        _resolve(argv)


def _leaves(command: click.Command, path: tuple[str, ...]) -> dict[tuple[str, ...], click.Command]:
    found = {path: command}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found |= _leaves(sub, (*path, name))
    return found


def test_the_readme_command_table_names_every_command_with_its_real_options() -> None:
    """Each synopsis of the Command line table, and each command the prose names, is a real
    command whose every ``--option`` it names exists; and every command the CLI has (but the
    groups) has a row."""
    commands = {
        path: command
        for path, command in _leaves(cli, ()).items()
        if path and not (isinstance(command, click.Group) and not command.invoke_without_command)
    }
    described: set[tuple[str, ...]] = set()
    for synopsis in _readme_mentions():
        words = synopsis.split()
        path = tuple(w for w in words[:2] if re.fullmatch(r"[a-z][a-z-]*", w))
        while path not in commands:
            assert path, synopsis
            path = path[:-1]
        described.add(path)
        options = {o for p in commands[path].params for o in p.opts if o.startswith("-")}
        named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", synopsis))
        assert named <= options, (synopsis, named - options)
    assert sorted(set(commands) - described) == []


def test_every_path_of_the_readme_routes_table_is_a_route_with_those_methods() -> None:
    """The HTTP routes table is the public contract other services and proxies are written
    against: a path or method in it that the app does not serve would be a 404 or 405 found
    in production. Parameters compare by position (``{ticket}`` is ``{token:str}``)."""
    settings = make_settings(
        discord_role_connections=True,
        token_encryption_key=base64.urlsafe_b64encode(bytes(range(32))).decode(),
        email_outbox_page=True,
        discord_public_key="0" * 64,
        discord_bot_token="not-used-here",
    )
    served: dict[str, set[str]] = {}
    for route in create_app(build_container(settings)).routes:
        path = re.sub(r"\{[^}]*\}", "{}", route.path)
        served.setdefault(path, set()).update(getattr(route, "methods", set()))
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## HTTP routes\n", 1)[1].split("\n### ", 1)[0]
    named = []
    for line in table.splitlines():
        if line.startswith("| `"):
            for span in re.findall(r"`([A-Z/]+ )?(/[^`?\s]*)[^`]*`", line.split(" | ")[0]):
                named.append(span)
    assert len(named) > 30, named
    for methods, path in named:
        normal = re.sub(r"\{[^}]*\}", "{}", path)
        assert normal in served, path
        for method in filter(None, methods.strip().split("/")):
            assert method in served[normal], (methods, path, served[normal])
