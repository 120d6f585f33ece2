"""What ``airdask`` loads at start: airdask's own commands alone when one of them runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from airdask.cli import extra
from airdask.executors.loader import BUILTIN_EXECUTORS, executor_class


def test_one_of_airdasks_own_commands_loads_its_module_alone() -> None:
    for name in extra.COMMAND_MODULES:
        got = extra.commands(["-v", name, "--help"])
        assert [command.name for command in got] == [name]
    everything = {command.name for command in extra.commands()}
    assert set(extra.COMMAND_MODULES) | {"dask", "celery"} <= everything
    # An unknown command, or none, loads every command (click then lists them).
    assert {command.name for command in extra.commands(["nosuch"])} == everything
    assert {command.name for command in extra.commands(["--help"])} == everything


def test_no_builtin_executor_command_is_shadowed_by_airdasks_own() -> None:
    for name in BUILTIN_EXECUTORS:
        for command in executor_class(name).get_cli_commands():
            assert command.name not in extra.COMMAND_MODULES, (name, command.name)


def test_tasks_states_imports_neither_dask_nor_celery(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from airdask.cli import main\n"
        "try:\n"
        "    main(['tasks', 'states', 'nodag', 'norun'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print(sorted(m for m in ('distributed', 'celery') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRDASK")}
    env["AIRDASK_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.splitlines() == ["exit 1", "[]"], proc.stderr
    assert "DAG 'nodag' has no runs" in proc.stderr
