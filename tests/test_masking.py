"""Secrets masking: the patterns, registered secrets, config values, log records."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from airdask.config import load_config
from airdask.masking import (
    MASK,
    SecretsFilter,
    SecretsMasker,
    display_value,
    redact,
    redact_patterns,
    register_config,
    secrets_of,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "postgresql+psycopg://u:s3cretpw@127.0.0.1:5432/db",
            "postgresql+psycopg://u:***@127.0.0.1:5432/db",
        ),
        ("cannot reach redis://:hunter22@h:6379/0 now", "cannot reach redis://:***@h:6379/0 now"),
        ("amqp://guest:guest@localhost//", "amqp://guest:***@localhost//"),
        ("db?password=abc&token=zz&x=1", "db?password=***&token=***&x=1"),
        ('{"api_key": "abcd", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("client_secret=xyz", "client_secret=***"),
        # Not credentials: a port and a path, a URL without a password, plain words.
        ("http://host:8080/a@b", "http://host:8080/a@b"),
        ("sqlite:////tmp/airdask.db", "sqlite:////tmp/airdask.db"),
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("no worker offers queue 'gpu'", "no worker offers queue 'gpu'"),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    assert redact_patterns(text) == expected


def test_registered_secrets_are_masked_anywhere_also_quoted() -> None:
    masker = SecretsMasker()
    masker.add("p@ss/word!")
    masker.add("abc")  # too short to mask everywhere: ignored
    text = "auth failed for p@ss/word! (url-quoted: p%40ss%2Fword%21), abc stays"
    assert masker.redact(text) == f"auth failed for {MASK} (url-quoted: {MASK}), abc stays"


def test_a_secret_containing_another_is_masked_whole() -> None:
    masker = SecretsMasker()
    masker.add("secret")
    masker.add("secret-and-more")
    assert masker.redact("x secret-and-more y") == f"x {MASK} y"


def test_config_values_as_shown() -> None:
    # A URL keeps everything but its password, even a password with a raw "/" in it.
    url = "postgresql+psycopg://u:s3c/ret@db.example:5432/airdask"
    assert (
        display_value(url, sensitive=True) == "postgresql+psycopg://u:***@db.example:5432/airdask"
    )
    assert display_value("sqlite:////x/airdask.db", sensitive=True) == "sqlite:////x/airdask.db"
    assert display_value("hunter22", sensitive=True) == MASK
    assert display_value("", sensitive=True) == ""
    assert display_value("DaskExecutor", sensitive=False) == "DaskExecutor"
    assert secrets_of(url, sensitive=True) == ["s3c/ret"]
    assert secrets_of("hunter22", sensitive=True) == ["hunter22"]
    assert secrets_of("hunter22", sensitive=False) == []


def test_register_config_masks_the_database_password_alone(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRDASK__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg://u:Zq9-only-here@h/db"
    )
    register_config(load_config())
    # A driver message that quotes the password without its URL.
    assert redact('password "Zq9-only-here" rejected') == f'password "{MASK}" rejected'


def test_filter_masks_message_args_and_traceback() -> None:
    masker = SecretsMasker()
    masker.add("tok-123456")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(SecretsFilter(masker))
    logger = logging.getLogger("airdask.test_masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s with %s", "postgresql://u:pw99@h/x", "tok-123456")
        try:
            raise RuntimeError("boom tok-123456")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert records[0] == f"connecting to postgresql://u:{MASK}@h/x with {MASK}"
    assert "RuntimeError: boom ***" in records[1] and "tok-123456" not in records[1]


@pytest.mark.timeout(120)
def test_task_reasons_are_masked_in_tasks_states(home: Path) -> None:
    from click.testing import CliRunner

    from airdask.cli import _add_optional_groups, cli
    from airdask.dag import DAG, PythonTask
    from sched_support import make_store, run_dag
    from task_funcs import fail_with

    config = load_config()
    store = make_store(config)
    with DAG("leaky") as dag:
        PythonTask("t", fail_with, op_args=["cannot reach postgresql://etl:leak-pw-31@db/x"])
    state, tis = run_dag(store, config, dag)
    assert state == "failed" and "leak-pw-31" in (tis["t"].reason or "")
    _add_optional_groups()
    result = CliRunner().invoke(
        cli, ["tasks", "states", "leaky", tis["t"].run_id], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    assert "postgresql://etl:***@db/x" in result.output and "leak-pw-31" not in result.output
