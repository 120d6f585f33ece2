"""The ``airdask`` command's log: ``[logging] logging_level``, ``-v``/``-q`` over it, masked
records; executors whose CLI cannot be loaded are named in a warning; negative numbers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from airdask.cli import cli
from airdask.cli.common import negative_numbers_as_arguments
from airdask.cli.log_setup import cli_level
from airdask.executors.loader import BUILTIN_EXECUTORS


@pytest.fixture
def root_level() -> Iterator[None]:
    """The CLI sets the root logger's level: give the next test the level it had."""
    root = logging.getLogger()
    level = root.level
    try:
        yield
    finally:
        root.setLevel(level)


@pytest.mark.parametrize(
    ("configured", "verbose", "quiet", "expected"),
    [
        ("INFO", 0, 0, logging.INFO),
        ("ERROR", 0, 0, logging.ERROR),
        (None, 0, 0, logging.WARNING),
        ("ERROR", 1, 0, logging.INFO),  # a flag overrides the configured level
        ("DEBUG", 0, 1, logging.ERROR),
        ("ERROR", 2, 0, logging.DEBUG),
        ("INFO", 5, 0, logging.DEBUG),
        ("INFO", 0, 3, logging.CRITICAL),
    ],
)
def test_level(configured: str | None, verbose: int, quiet: int, expected: int) -> None:
    assert cli_level(configured, verbose=verbose, quiet=quiet) == expected


@pytest.mark.usefixtures("root_level")
def test_the_command_applies_the_configured_level_and_the_flags(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    args = ["config", "get", "core", "executor"]
    monkeypatch.setenv("AIRDASK__LOGGING__LOGGING_LEVEL", "DEBUG")
    assert runner.invoke(cli, args).exit_code == 0
    assert logging.getLogger().level == logging.DEBUG
    assert runner.invoke(cli, ["-q", *args]).exit_code == 0
    assert logging.getLogger().level == logging.ERROR
    monkeypatch.setenv("AIRDASK__LOGGING__LOGGING_LEVEL", "ERROR")
    assert runner.invoke(cli, ["-v", *args]).exit_code == 0
    assert logging.getLogger().level == logging.INFO


def test_log_level_and_masking_in_a_real_process(tmp_path: Path) -> None:
    """A process of its own: the handler on stderr is the CLI's, not pytest's."""
    script = textwrap.dedent(
        """
        import logging
        from airdask.cli.log_setup import setup_logging
        setup_logging()
        log = logging.getLogger("airdask.probe")
        log.debug("debug-line")
        log.info("info-line")
        log.warning("cannot reach %s", "postgresql://app:pw-in-url-1@db/x")
        log.error("driver says: password pw-alone-22 rejected")
        """
    )
    env = {
        "AIRDASK_HOME": str(tmp_path),
        "AIRDASK__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRDASK__DATABASE__SQL_ALCHEMY_CONN": "postgresql://app:pw-alone-22@db/x",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "INFO airdask.probe: info-line",
        "WARNING airdask.probe: cannot reach postgresql://app:***@db/x",
        "ERROR airdask.probe: driver says: password *** rejected",
    ]


@pytest.fixture
def broken_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A built-in executor name whose module raises at import."""
    (tmp_path / "airdask_broken_exec.py").write_text("raise RuntimeError('half-installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(BUILTIN_EXECUTORS, "BrokenExecutor", "airdask_broken_exec.Broken")
    monkeypatch.setitem(BUILTIN_EXECUTORS, "ExtraExecutor", "not_installed_pkg_zz.Extra")
    return "BrokenExecutor"


def test_an_executor_whose_module_fails_is_named_in_a_warning(
    broken_executor: str, caplog: pytest.LogCaptureFixture
) -> None:
    from airdask.cli import extra

    caplog.set_level(logging.INFO, logger="airdask.cli.extra")
    names = {command.name for command in extra.commands()}
    assert {"run", "pools", "dask"} <= names  # the others still load
    by_level = {r.levelno: r.getMessage() for r in caplog.records if r.name == extra.__name__}
    assert by_level[logging.WARNING] == (
        "BrokenExecutor offers no `airdask` commands: its module airdask_broken_exec cannot be "
        "imported (RuntimeError: half-installed)"
    )
    # A missing optional dependency (an extra not installed) is a choice, not a fault.
    assert "ExtraExecutor offers no `airdask` commands" in by_level[logging.INFO]
    assert "No module named 'not_installed_pkg_zz'" in by_level[logging.INFO]


def _command() -> click.Command:
    @click.command()
    @click.argument("name")
    @click.argument("slots", type=int)
    @click.option("--description")
    @click.option("-y", "--yes", is_flag=True)
    @click.option("--pair", nargs=2)
    def command(name: str, slots: int, description: str | None, yes: bool, pair: object) -> None:
        pass

    return command


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["p", "-1"], ["--", "p", "-1"]),
        (["p", "-1", "--description", "d"], ["--description", "d", "--", "p", "-1"]),
        (["--description", "-1", "p", "3"], ["--description", "-1", "p", "3"]),  # a value
        (["-y", "p", "-2.5"], ["-y", "--", "p", "-2.5"]),
        (["--description=x", "p", "-1e3"], ["--description=x", "--", "p", "-1e3"]),
        (["--pair", "-1", "-2", "p", "-3"], ["--pair", "-1", "-2", "--", "p", "-3"]),
        (["p", "--", "-1"], ["p", "--", "-1"]),  # already explicit
        (["p", "-x"], ["p", "-x"]),  # not a number: click reports the unknown option
        (["p", "3"], ["p", "3"]),
    ],
)
def test_negative_numbers_become_arguments(args: list[str], expected: list[str]) -> None:
    assert negative_numbers_as_arguments(_command(), args) == expected


def test_a_broken_executor_module_is_a_warning_line_on_the_commands_stderr(
    home: Path, tmp_path: Path
) -> None:
    """Through the real entry point: the `airdask` command still works, and says on stderr,
    in one line, which executor lost its commands and why."""
    (tmp_path / "airdask_broken_exec.py").write_text("raise RuntimeError('half-installed')\n")
    probe = (
        "from airdask.executors.loader import BUILTIN_EXECUTORS\n"
        "BUILTIN_EXECUTORS['BrokenExecutor'] = 'airdask_broken_exec.Broken'\n"
        "from airdask.cli import main\n"
        "main(['config', 'get', 'core', 'parallelism'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "AIRDASK_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "32", proc.stderr
    assert proc.stderr.splitlines() == [
        "WARNING airdask.cli.extra: BrokenExecutor offers no `airdask` commands: its module "
        "airdask_broken_exec cannot be imported (RuntimeError: half-installed)"
    ]
