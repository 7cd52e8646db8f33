"""The outgoing proxy read from the environment (``adapters.proxies``): by the URL's scheme,
else ``ALL_PROXY``, never for a ``NO_PROXY`` host; a proxy the calls cannot use stops the
start, naming the variable and never its value (which may hold a password)."""

from __future__ import annotations

import pytest

from adapters.proxies import proxy_for
from entrypoints.bot.runtime import build_gateway_bot
from entrypoints.container import build_container
from entrypoints.settings import SettingsError
from tests.harness import make_settings

VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
SECRET = "whsec_" + "c" * 43


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
    assert proxy_for("http://127.0.0.1:9000/in") == "http://plain.internal:8080"


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
    monkeypatch.setenv("NO_PROXY", "ample.com,10.0.0.0/8,localhost:8443,::1")
    assert proxy_for("https://hooks.example.com/in") is not None  # not a label boundary
    assert proxy_for("https://10.1.2.3/in") is not None  # ranges match nothing: proxied
    assert proxy_for("https://localhost:8443/in") is None
    assert proxy_for("https://localhost:9443/in") is not None  # another port
    assert proxy_for("https://[::1]:8443/in") is None
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
    monkeypatch.setenv("HTTP_PROXY", "socks5://filter.internal:1080")  # http URLs only
    with pytest.raises(SettingsError, match="Webhooks: HTTP_PROXY"):
        build_container(
            make_settings(webhook_urls="http://127.0.0.1:9000/in", webhook_secret=SECRET)
        )


def test_the_bot_takes_the_same_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """hikari's own default ignores the environment: the bot is given the proxy."""
    monkeypatch.setenv("HTTPS_PROXY", "http://filter.internal:3128")
    container = build_container(make_settings(discord_bot_token="MTIz.YWJj.ZGVm"))
    runner = build_gateway_bot(container)
    assert runner.bot.proxy_settings.url == "http://filter.internal:3128"
    assert container.discord_http()._proxy == "http://filter.internal:3128"
