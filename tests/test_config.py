from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

from airdask.cli import cli
from airdask.config import OPTIONS, Config, ConfigError, load_config


def write_cfg(home: Path, text: str) -> None:
    (home / "airdask.cfg").write_text(text)


def test_defaults_refer_to_home(home: Path) -> None:
    cfg = load_config()
    assert cfg.get("database", "sql_alchemy_conn") == f"sqlite:///{home}/airdask.db"
    assert cfg.get("logging", "base_log_folder") == f"{home}/logs"
    assert cfg.get("core", "parallelism") == 32
    assert cfg.get("core", "executor") == "DaskExecutor"
    assert cfg.source("core", "parallelism") == "default"


def test_every_option_is_documented_and_typed() -> None:
    for section, options in OPTIONS.items():
        for key, option in options.items():
            assert option.help, f"[{section}] {key} has no help"
            assert option.type in (str, int, float, bool)
    for key in ("cluster_address", "tls_ca", "tls_cert", "tls_key"):
        assert key in OPTIONS["dask"]


def test_file_then_env_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cfg(home, "[core]\nparallelism = 4\nexecutor = LocalExecutor\n")
    cfg = load_config()
    assert cfg.get("core", "parallelism") == 4 and cfg.source("core", "parallelism") == "file"
    monkeypatch.setenv("AIRDASK__CORE__PARALLELISM", "7")
    cfg = load_config()
    assert cfg.get("core", "parallelism") == 7 and cfg.source("core", "parallelism") == "env"
    assert cfg.get("core", "executor") == "LocalExecutor"


def test_resolved_when_built_not_at_import(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_config()
    monkeypatch.setenv("AIRDASK__DASK__CLUSTER_ADDRESS", "tcp://127.0.0.1:9999")
    assert first.get("dask", "cluster_address") == ""
    assert load_config().get("dask", "cluster_address") == "tcp://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[core]\nparalelism = 3\n", r"unknown config key \[core\] paralelism"),
        ("[cores]\nparallelism = 3\n", r"unknown config section \[cores\]"),
        ("[core]\nparallelism = many\n", r"\[core\] parallelism: expected int, got 'many'"),
        ("[dask]\npool_resources = maybe\n", r"'maybe' is not one of auto, strict, off"),
        ("[scheduler]\nloop_interval = soon\n", r"expected float"),
        ("[core]\nparallelism = -1\n", r"\[core\] parallelism: must be >= 0, got '-1'"),
        ("[dask]\nconnect_timeout = 0\n", r"\[dask\] connect_timeout: must be > 0, got '0'"),
        ("[dask]\nn_workers = 0\n", r"\[dask\] n_workers: must be >= 1, got '0'"),
        ("[scheduler]\nloop_interval = nan\n", r"loop_interval: must be >= 0, got 'nan'"),
        ("[logging]\nlogging_level = LOUD\n", r"'LOUD' is not one of DEBUG, INFO"),
    ],
)
def test_bad_file_values_name_the_key(home: Path, text: str, message: str) -> None:
    write_cfg(home, text)
    with pytest.raises(ConfigError, match=message):
        load_config()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("AIRDASK__CORE__NOPE", r"AIRDASK__CORE__NOPE: unknown config key \[core\] nope"),
        ("AIRDASK__NOPE__X", r"unknown config section \[nope\]"),
        ("AIRDASK__CORE", r"expected AIRDASK__SECTION__KEY"),
    ],
)
def test_bad_env_names(
    home: Path, monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_get_unknown_key_errors(home: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config().get("core", "nope")


def test_with_overrides_is_checked(home: Path) -> None:
    cfg = load_config().with_overrides({("core", "parallelism"): 3})
    assert cfg.get("core", "parallelism") == 3
    with pytest.raises(ConfigError):
        load_config().with_overrides({("core", "parallelism"): "x"})


def test_cli_config_get_and_list(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRDASK__CORE__PARALLELISM", "5")
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "get", "core", "parallelism"])
    assert result.exit_code == 0 and result.output.strip() == "5"
    result = runner.invoke(cli, ["config", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "parallelism" in result.output and "env" in result.output


def test_cli_reports_bad_config_in_one_line(home: Path) -> None:
    write_cfg(home, "[core]\nparallelism = lots\n")
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "airdask.cli", "config", "get", "core", "parallelism"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "[core] parallelism: expected int, got 'lots'" in proc.stderr


def test_negative_env_values_are_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRDASK__SCHEDULER__TASK_QUEUED_TIMEOUT", "-5")
    with pytest.raises(ConfigError, match=r"task_queued_timeout: must be > 0, got '-5'"):
        load_config()


def test_connect_timeout_default_is_a_few_seconds(home: Path) -> None:
    assert load_config().get("dask", "connect_timeout") == 5.0


def test_cli_masks_the_database_password_unless_asked(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://u:s3cretpw@127.0.0.1:5432/airdask"
    monkeypatch.setenv("AIRDASK__DATABASE__SQL_ALCHEMY_CONN", url)
    runner = CliRunner()
    masked = "postgresql+psycopg://u:***@127.0.0.1:5432/airdask"
    for args in (["config", "list"], ["config", "list", "--defaults"]):
        result = runner.invoke(cli, args, env={"COLUMNS": "300"})
        assert result.exit_code == 0 and masked in result.output
        assert "s3cretpw" not in result.output
    got = runner.invoke(cli, ["config", "get", "database", "sql_alchemy_conn"])
    assert got.exit_code == 0 and got.output.strip() == masked
    shown = runner.invoke(cli, ["config", "get", "database", "sql_alchemy_conn", "--show-secrets"])
    assert shown.output.strip() == url
    listed = runner.invoke(cli, ["config", "list", "--show-secrets"], env={"COLUMNS": "300"})
    assert url in listed.output


def test_every_section_has_a_typed_view_of_its_options() -> None:
    """Adding an option is one Option entry plus one field of the same name and type."""
    hints = typing.get_type_hints(Config)
    assert set(OPTIONS) <= set(hints), "a section of OPTIONS has no typed view on Config"
    for section, options in OPTIONS.items():
        view = hints[section]
        fields = typing.get_type_hints(view)
        assert list(fields) == list(options), f"{view.__name__} fields differ from [{section}]"
        for key, option in options.items():
            assert fields[key] is option.type, f"[{section}] {key}: {fields[key]} != {option.type}"


def test_typed_sections_carry_converted_values(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRDASK__SCHEDULER__LOOP_INTERVAL", "0.25")
    cfg = load_config().with_overrides({("core", "parallelism"): 3})
    assert cfg.core.parallelism == 3 and cfg.scheduler.loop_interval == 0.25
    assert cfg.dask.connect_timeout == 5.0 and cfg.dask.pool_resources == "auto"
    assert cfg.logging.base_log_folder == f"{home}/logs"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.core.parallelism = 4  # type: ignore[misc]
