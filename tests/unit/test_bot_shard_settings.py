"""Which gateway shards a copy of the bot runs: settings and command-line options, checked
before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from entrypoints.cli import cli
from entrypoints.settings import SettingsError, ShardPlan, load_settings
from tests.harness import TEST_SECRET_KEY, make_settings


def test_not_sharded_unless_a_shard_count_is_set() -> None:
    assert make_settings().shards is None


def test_the_shards_this_copy_runs() -> None:
    plan = make_settings(discord_shard_ids=" 1, 0 ", discord_shard_count=3).shards
    assert plan == ShardPlan((1, 0), 3)
    assert str(plan) == "shards 1, 0 of 3"
    assert str(make_settings(discord_shard_ids="2", discord_shard_count=3).shards) == (
        "shard 2 of 3"
    )


def test_a_shard_count_alone_runs_every_shard_here() -> None:
    assert make_settings(discord_shard_count=2).shards == ShardPlan((0, 1), 2)


@pytest.mark.parametrize(
    ("ids", "count", "variable", "message"),
    [
        ("0,2", "2", "SHARD_IDS and",
         "shard 2 does not exist with 2 shards: shard ids run from 0 to 1"),
        ("1", "1", "SHARD_IDS and",
         "shard 1 does not exist with 1 shard: shard ids run from 0 to 0"),
        ("0,1,0", "2", "SHARD_IDS:", "shard 0 is listed twice"),
        ("0,one", "2", "SHARD_IDS:", "'one' is not a shard number"),
        ("0,,1", "2", "SHARD_IDS:", "an empty item"),
        ("-1", "2", "SHARD_IDS:", "'-1' is not a shard number"),
        ("0,1", "", "SHARD_IDS and", "the shard ids need the shard count"),
        ("", "0", "SHARD_COUNT:", "greater than or equal to 1"),
        ("", "1" + "0" * 22, "SHARD_COUNT:", "less than or equal to 100000"),
    ],
)  # fmt: skip
def test_bad_shard_settings_stop_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, ids: str, count: str, variable: str, message: str
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_SHARD_IDS", ids)
    if count:
        monkeypatch.setenv("TASKFLOW_LINK_DISCORD_SHARD_COUNT", count)
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert f"TASKFLOW_LINK_DISCORD_{variable}" in str(refused.value)
    assert message in str(refused.value)
    assert "Value error" not in str(refused.value)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    # Nothing may be contacted: a check that passed would try to reach this and fail loudly.
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_API_URL", "http://127.0.0.1:9/api/v10")
    return CliRunner()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--shard-ids", "0,2", "--shard-count", "2"],
         "Invalid value for '--shard-ids' with '--shard-count': shard 2 does not exist with 2 "
         "shards: shard ids run from 0 to 1"),
        (["--shard-ids", "1,1", "--shard-count", "2"],
         "Invalid value for '--shard-ids': shard 1 is listed twice"),
        (["--shard-ids", "zero", "--shard-count", "2"],
         "Invalid value for '--shard-ids': 'zero' is not a shard number"),
        (["--shard-ids", "", "--shard-count", "2"],
         "Invalid value for '--shard-ids': give at least one shard number"),
        # No count anywhere: the option to add is named (it named the variable only).
        (["--shard-ids", "1"],
         "Invalid value for '--shard-ids': the shard ids need the shard count (how many "
         "shards all copies run): give --shard-count (or set "
         "TASKFLOW_LINK_DISCORD_SHARD_COUNT)"),
        (["--shard-count", "0"],
         "Invalid value for '--shard-count': 0 is not in the range 1<=x<=100000"),
        # A count alone runs every shard here: listing 10^12 of them was a MemoryError.
        (["--shard-count", "1000000000000"],
         "Invalid value for '--shard-count': 1000000000000 is not in the range 1<=x<=100000"),
        (["--shard-ids", "0", "sync"],
         "--shard-ids and --shard-count are for running the bot, not for `bot sync`"),
    ],
)  # fmt: skip
def test_bad_shard_options_are_usage_errors(
    runner: CliRunner, arguments: list[str], message: str
) -> None:
    result = runner.invoke(cli, ["bot", *arguments])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_option_is_checked_with_the_other_half_from_the_settings(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_SHARD_COUNT", "2")
    result = runner.invoke(cli, ["bot", "--shard-ids", "3"])
    assert result.exit_code == 2, result.output
    assert (
        "Invalid value for '--shard-ids' with TASKFLOW_LINK_DISCORD_SHARD_COUNT: shard 3 does "
        "not exist with 2 shards" in " ".join(result.output.split())
    )
