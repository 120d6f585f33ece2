"""CeleryExecutor without a broker: the [celery] settings, JSON messages, the lazy import,
masking, and the one-line errors of an unreachable broker or backend."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from airdask import PythonCommand
from airdask.cli import cli
from airdask.commands import CommandError, build_spec
from airdask.config import Config
from airdask.executors.celery.messages import from_message, to_message
from airdask.executors.celery.settings import celery_settings, resolve_result_backend
from airdask.state import TaskInstanceKey
from celery_support import require_celery

KEY = TaskInstanceKey("d", "t", "r", 1)


def test_the_core_never_imports_celery() -> None:
    code = (
        "import sys, airdask, airdask.executors, airdask.config, airdask.cli.extra\n"
        "airdask.executors.BaseExecutor; airdask.executors.BUILTIN_EXECUTORS['CeleryExecutor']\n"
        "import airdask.executors.celery, airdask.executors.celery.settings\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_result_backend_defaults_to_a_redis_broker_else_the_database() -> None:
    db = "postgresql+psycopg://u:pw@h/db"
    assert resolve_result_backend("", "redis://h:6379/3", db) == "redis://h:6379/3"
    assert resolve_result_backend("", "amqp://g:g@h//", db) == "db+" + db
    assert resolve_result_backend("redis://x/1", "amqp://g:g@h//", db) == "redis://x/1"


def test_settings_and_queue_routing(config: Config) -> None:
    settings = celery_settings(config.with_overrides({("celery", "default_queue"): "q0"}))
    assert settings.queue_for(None) == "q0" and settings.queue_for("default") == "q0"
    assert settings.queue_for("gpu") == "gpu"
    assert settings.celery.allow_pickle is False and settings.backend_kind == "redis"


def test_messages_are_json_and_pickles_need_allow_pickle() -> None:
    import json

    spec = build_spec(KEY, ["echo", "hi"], log_root=None, return_log=True)
    message = to_message(spec, allow_pickle=False)
    assert from_message(json.loads(json.dumps(message)), allow_pickle=False) == spec
    py = build_spec(KEY, PythonCommand(print, "x"), log_root=None, return_log=True)
    with pytest.raises(CommandError, match="allow_pickle"):
        to_message(py, allow_pickle=False)
    pickled = to_message(py, allow_pickle=True)
    assert base64.b64decode(pickled["payload_b64"]) == py["payload"]
    with pytest.raises(ValueError, match="refuses pickled commands"):
        from_message(pickled, allow_pickle=False)  # the worker's own setting decides too
    with pytest.raises(ValueError, match="version"):
        from_message({**message, "version": 99}, allow_pickle=True)
    with pytest.raises(ValueError, match="argv"):
        from_message({**message, "argv": "rm -rf /"}, allow_pickle=True)


def test_config_list_masks_broker_and_backend_passwords(home: Path) -> None:
    env = {
        "AIRDASK__CELERY__BROKER_URL": "amqp://guest:brokerpw1@127.0.0.1:5672//",
        "AIRDASK__CELERY__RESULT_BACKEND": "redis://:backendpw2@127.0.0.1:6379/1",
        "COLUMNS": "300",
    }
    result = CliRunner().invoke(cli, ["config", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "amqp://guest:***@127.0.0.1:5672//" in result.output
    assert "brokerpw1" not in result.output and "backendpw2" not in result.output


@pytest.mark.parametrize(
    ("option", "url", "what"),
    [
        ("broker_url", "redis://:secretpw9@127.0.0.1:1/0", "broker"),
        ("broker_url", "amqp://guest:secretpw9@127.0.0.1:1//", "broker"),
    ],
)
def test_an_unreachable_broker_is_one_line_within_seconds(
    config: Config, option: str, url: str, what: str
) -> None:
    require_celery()
    from airdask.executors.celery.executor import CeleryConnectionError, CeleryExecutor

    overrides = {("celery", option): url, ("celery", "result_backend"): "redis://127.0.0.1:1/0",
                 ("celery", "operation_timeout"): 2}  # fmt: skip
    executor = CeleryExecutor(config=config.with_overrides(overrides))
    started = time.monotonic()
    with pytest.raises(CeleryConnectionError) as caught:
        executor.start()
    assert time.monotonic() - started < 6
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Celery {what} at ") and "\n" not in message
    assert "secretpw9" not in message and "***" in message


def test_the_worker_command_says_the_broker_is_down_in_one_line(home: Path) -> None:
    require_celery()
    import os

    env = {**os.environ, "AIRDASK__CELERY__BROKER_URL": "redis://:secretpw9@127.0.0.1:1/0",
           "AIRDASK__CELERY__OPERATION_TIMEOUT": "1"}  # fmt: skip
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "airdask.cli", "celery", "worker"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1 and time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Celery broker" in lines[0], result.stderr
    assert "secretpw9" not in result.stderr + result.stdout
