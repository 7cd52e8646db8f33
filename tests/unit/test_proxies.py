"""The outgoing proxy read from the environment (``adapters.proxies``): by the URL's scheme,
else ``ALL_PROXY``, never for a ``NO_PROXY`` host; a proxy the calls cannot use stops the
start, naming the variable and never its value (which may hold a password)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.proxies import proxy_for
from entrypoints.bot.runtime import build_gateway_bot
from entrypoints.container import build_container, outgoing_proxies
from entrypoints.emulator import EmulatorState
from entrypoints.emulator.bot_api import deliver
from entrypoints.settings import SettingsError
from tests.harness import make_settings, webhook_secret
from tests.servers import free_port

VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
SECRET = webhook_secret("proxies")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_no_proxy_in_the_environment_means_none() -> None:
    assert proxy_for("https://discord.com/api/v10") is None


def test_the_proxy_for_the_urls_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://filter.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.internal:8080")
    assert proxy_for("https://hooks.example.com/in") == "http://filter.internal:3128"
    assert proxy_for("http://hooks.example.com/in") == "http://plain.internal:8080"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9000/hook",
        "http://127.0.0.1:9000/hook",
        "http://127.8.9.10/hook",
        "http://[::1]:9000/hook",
        "https://localhost:8443/hook",
        "http://127.0.0.1:8765/api/v10",  # the Discord emulator's API
    ],
)
def test_this_machine_is_never_reached_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A proxy's localhost is the proxy's machine: a plain-http signed POST to
    http://localhost:9000/hook sent through it would be read by the proxy and delivered to
    whatever listens there. As Go's ProxyFromEnvironment, loopback hosts go direct, with
    or without NO_PROXY."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://corporate.internal:3128")
    assert proxy_for(url) is None
    # Only the loopback host itself: a name that merely starts like one is proxied.
    assert proxy_for("http://localhost.example.com/hook") == "http://corporate.internal:3128"
    assert proxy_for("http://128.0.0.1/hook") == "http://corporate.internal:3128"
    # "localhost." is a name the network's DNS answers for (glibc's /etc/hosts lookup
    # matches "localhost" only): it is not known to be this machine, so it goes as any name.
    assert proxy_for("http://LocalHost.:9000/hook") == "http://corporate.internal:3128"


def test_webhooks_and_discord_calls_to_this_machine_go_direct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``taskflow-link config`` shows, and what the senders get: a loopback webhook
    URL and a Discord API on this machine (the emulator) take no proxy."""
    monkeypatch.setenv("HTTP_PROXY", "http://corporate.internal:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://corporate.internal:3128")
    settings = make_settings(
        webhook_urls="http://localhost:9000/hook, https://hooks.example.com/in",
        webhook_secret=SECRET,
        discord_api_url="http://127.0.0.1:8765/api/v10",
    )
    assert outgoing_proxies(settings) == [
        ("Discord's API", None),
        ("webhooks to http://localhost:9000", None),
        ("webhooks to https://hooks.example.com", "http://corporate.internal:3128"),
    ]
    container = build_container(settings)
    assert container.discord_http()._proxy is None


def test_all_proxy_when_the_scheme_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's own reading of the environment ignores ALL_PROXY (and connects directly)."""
    monkeypatch.setenv("ALL_PROXY", "http://everything.internal:3128")
    assert proxy_for("https://hooks.example.com/in") == "http://everything.internal:3128"


def test_a_proxy_without_a_scheme_is_an_http_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "filter.internal:3128")
    assert proxy_for("https://hooks.example.com/in") == "http://filter.internal:3128"


def test_no_proxy_hosts_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://filter.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost, .corp.example,internal.example:8443")
    assert proxy_for("https://hooks.corp.example/in") is None
    assert proxy_for("https://internal.example:8443/in") is None
    assert proxy_for("https://internal.example/in") == "http://filter.internal:3128"
    assert proxy_for("https://hooks.example.com/in") == "http://filter.internal:3128"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTPS_PROXY", "https://user:s3cret-pass@filter.internal:3128"),
        ("ALL_PROXY", "socks5://user:s3cret-pass@filter.internal:1080"),
    ],
)
def test_a_proxy_these_calls_cannot_use_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """aiohttp would skip an https:// proxy with a warning and connect directly: around the
    filtering proxy the README tells operators to put in front of webhooks."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable) as refused:
        proxy_for("https://hooks.example.com/in")
    assert "s3cret" not in str(refused.value)


def test_an_empty_lower_case_variable_does_not_hide_the_upper_case_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``https_proxy=${https_proxy}`` in a compose file, with nothing on the host: blank. The
    proxy in HTTPS_PROXY still counts (urllib would drop it, and send webhooks direct)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://filter.internal:3128")
    monkeypatch.setenv("https_proxy", "")
    assert proxy_for("https://hooks.example.com/in") == "http://filter.internal:3128"
    monkeypatch.setenv("no_proxy", " ")
    assert proxy_for("https://hooks.example.com/in") == "http://filter.internal:3128"


def test_the_lower_case_variable_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper.internal:3128")
    monkeypatch.setenv("https_proxy", "http://lower.internal:3128")
    assert proxy_for("https://hooks.example.com/in") == "http://lower.internal:3128"


def test_no_proxy_entries_match_whole_labels_and_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://filter.internal:3128")
    monkeypatch.setenv("NO_PROXY", "ample.com,10.0.0.0/8,intranet:8443,fd00::1")
    assert proxy_for("https://hooks.example.com/in") is not None  # not a label boundary
    assert proxy_for("https://10.1.2.3/in") is not None  # ranges match nothing: proxied
    assert proxy_for("https://intranet:8443/in") is None
    assert proxy_for("https://intranet:9443/in") is not None  # another port
    assert proxy_for("https://[fd00::1]:8443/in") is None
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_for("https://hooks.example.com/in") is None


def test_a_proxy_url_that_is_not_one_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """urlsplit's own error would quote the netloc, password and all."""
    for proxy in (
        "http://user:s3cr\uff20et@filter.internal:3128",
        "http://user:s3cret@filter.internal:99999",  # not a port
        "http://user:s3cret@:3128",  # no host
    ):
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        with pytest.raises(ValueError, match="HTTPS_PROXY") as refused:
            proxy_for("https://hooks.example.com/in")
        assert "s3cr" not in str(refused.value)


def test_building_the_container_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every command (web, bot, CLI) builds the container first: it stops before doing
    anything, rather than after (when what it made is closed)."""
    monkeypatch.setenv("HTTPS_PROXY", "https://filter.internal:3128")
    with pytest.raises(SettingsError, match="Discord's API: HTTPS_PROXY"):
        build_container(make_settings())
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("NO_PROXY", "discord.com")
    monkeypatch.setenv("ALL_PROXY", "socks5://filter.internal:1080")
    with pytest.raises(SettingsError, match="Webhooks: ALL_PROXY"):
        build_container(
            make_settings(webhook_urls="https://hooks.example.com/in", webhook_secret=SECRET)
        )


def test_the_bot_takes_the_same_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """hikari's own default ignores the environment: the bot is given the proxy."""
    monkeypatch.setenv("HTTPS_PROXY", "http://filter.internal:3128")
    container = build_container(make_settings(discord_bot_token="MTIz.YWJj.ZGVm"))
    runner = build_gateway_bot(container)
    assert runner.bot.proxy_settings.url == "http://filter.internal:3128"
    assert container.discord_http()._proxy == "http://filter.internal:3128"


async def test_the_emulator_sends_interactions_to_this_machine_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulator does not use ``proxy_for`` (it may not import the service) but httpx's
    reading of the environment, which proxies loopback hosts too: with HTTP_PROXY set (here
    to a port nobody listens on), its signed POST to the local service would go to the proxy."""
    requests: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    state = EmulatorState("1234", "secret", set(), transit_delay=0.0)
    state.interactions_url = f"http://localhost:{port}/interactions"
    try:
        answered = await deliver(state, {"type": 1})
    finally:
        server.close()
    assert answered.status_code == 200
    assert [r.split(b" ")[1] for r in requests] == [b"/interactions"]  # not a proxy's absolute URL
