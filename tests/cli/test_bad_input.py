"""Every command, every kind of mistake: exit status != 0, exactly one line of output that
names the mistake (stderr and log records at WARNING and above, together), no secret in it,
and not one row written to the metadata database (every table is compared before/after).

Most cases run in-process through ``airdask.cli.main`` inside click's ``CliRunner``
isolation (a subprocess per case would cost an interpreter start-up each); log records are
taken from ``caplog`` there, because pytest owns the root logger. The cases where the process
boundary matters (what really reaches stderr, the exit status of a DAG file that calls
``sys.exit``, the default Dask connect timeout) run ``airdask`` as a subprocess.

Executor-level mistakes are in their own tests at the end: a queue no worker offers fails
the task (the run is written: the mistake is known only once the task meets the cluster).
An unreachable *broker* belongs to the Celery executor, which does not exist yet: its case
goes here when it does.
"""

from __future__ import annotations

import logging
import os
import socket
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from airdask.cli import main
from airdask.store import Base, Store
from sched_support import cli

SECRET = "s3cretpw-not-shown"


def closed_port() -> int:
    """A local port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REFUSED_DB = f"postgresql+psycopg://airdask:{SECRET}@127.0.0.1:{closed_port()}/airdask"
UNREACHABLE = f"tcp://127.0.0.1:{closed_port()}"

DAG_FILES = {
    "good.py": """
        from airdask.dag import DAG, BashTask
        with DAG("good") as dag:
            BashTask("a", "true")
    """,
    "unknown_pool.py": """
        from airdask.dag import DAG, BashTask
        with DAG("unknown_pool") as dag:
            BashTask("a", "true", pool="nopool")
    """,
    "oversize.py": """
        from airdask.dag import DAG, BashTask
        with DAG("oversize") as dag:
            BashTask("a", "true", pool="tiny", pool_slots=3)
    """,
    "raises.py": "raise RuntimeError('broken at import')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "syntax.py": "from airdask.dag import DAG\nx = (\n",
    "no_dag.py": "x = 1\n",
}
CONFIG_FILES = {
    "typo.cfg": "[core]\nparalelism = 3\n",
    "section.cfg": "[cores]\nparallelism = 3\n",
    "negative.cfg": "[core]\ndefault_pool_slots = -4\n",
    "choice.cfg": "[dask]\npool_resources = maybe\n",
    "garbage.cfg": "this is not an ini file\n",
}


@dataclass(frozen=True)
class World:
    home: Path
    dags: Path
    cfg: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str | None]:
        """The environment of one invocation: only this world's AIRDASK variables."""
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AIRDASK")}
        env.update(
            {
                "AIRDASK_HOME": str(self.home),
                "AIRDASK__CORE__EXECUTOR": "LocalExecutor",
                "AIRDASK__CORE__PARALLELISM": "2",
                "COLUMNS": "200",
            }
        )
        env.update(extra or {})
        return env

    def store(self) -> Store:
        return Store.from_url(f"sqlite:///{self.home}/airdask.db")


def snapshot(world: World) -> dict[str, list[str]]:
    """Every row of every airdask table."""
    store = world.store()
    try:
        with store.engine.connect() as conn:
            return {
                table.name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
                for table in Base.metadata.sorted_tables
            }
    finally:
        store.dispose()


def invoke(
    world: World, args: list[str], env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """``airdask ARGS`` in-process: (exit status, stdout, stderr)."""
    with CliRunner().isolation(env=world.env(env)) as (out, err, _):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bad-input")
    home, dags, cfg = root / "home", root / "home" / "dags", root / "cfg"
    dags.mkdir(parents=True)
    cfg.mkdir()
    for name, text in DAG_FILES.items():
        (dags / name).write_text(textwrap.dedent(text))
    for name, text in CONFIG_FILES.items():
        (cfg / name).write_text(text)
    made = World(home, dags, cfg)
    # What a user has before the mistake: a schema, a pool, a run with its task instance.
    for args in (
        ["db", "init"],
        ["pools", "set", "tiny", "2"],
        ["dags", "trigger", "good", "--run-id", "r1"],
    ):
        code, _out, err = invoke(made, args)
        assert code == 0, (args, err)
    yield made


def one_line(err: str, records: list[logging.LogRecord]) -> list[str]:
    """What the user sees: stderr lines, plus the log records pytest took from the root."""
    lines = [line for line in err.splitlines() if line.strip()]
    return lines + [
        f"{r.levelname} {r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.WARNING
    ]


D = "{dags}"  # replaced by the world's DAG folder
C = "{cfg}"  # replaced by the world's folder of config files

CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    # unknown things
    ("unknown DAG", ["run", "nope"], {}, "unknown DAG id 'nope'"),
    ("unknown DAG, trigger", ["dags", "trigger", "nope"], {}, "unknown DAG id 'nope'"),
    ("no DAG file", ["run", "missing.py"], {}, "no DAG file missing.py"),
    ("file without DAG", ["run", f"{D}/no_dag.py"], {}, "no_dag.py defines no DAG"),
    ("unknown pool", ["run", f"{D}/unknown_pool.py"], {}, "uses unknown pool 'nopool'"),
    ("unknown pool, trigger", ["dags", "trigger", "unknown_pool"], {}, "unknown pool 'nopool'"),
    ("pool too small", ["run", f"{D}/oversize.py"], {}, "needs 3 slots of pool 'tiny'"),
    ("unknown executor", ["run", "good", "--executor", "Nope"], {}, "unknown executor 'Nope'"),
    (
        "executor module",
        ["scheduler", "--executor", "no_such.Executor"],
        {},
        "cannot import executor module 'no_such'",
    ),
    (
        "executor from config",
        ["run", "good"],
        {"AIRDASK__CORE__EXECUTOR": "Nope"},
        "unknown executor 'Nope'",
    ),
    (
        "--cluster without Dask",
        ["run", "good", "--executor", "LocalExecutor", "--cluster", UNREACHABLE],
        {},
        "--cluster needs the DaskExecutor, not --executor LocalExecutor",
    ),
    ("unknown pool, delete", ["pools", "delete", "nopool"], {}, "no pool 'nopool'"),
    ("default pool, delete", ["pools", "delete", "default_pool"], {}, "cannot be deleted"),
    ("unknown run", ["tasks", "states", "good", "r9"], {}, "has no run 'r9' (latest: r1)"),
    ("DAG without runs", ["tasks", "states", "nope", "r1"], {}, "DAG 'nope' has no runs"),
    ("unknown task", ["tasks", "logs", "good", "zz", "r1"], {}, "has no task 'zz'"),
    ("existing run id", ["dags", "trigger", "good", "--run-id", "r1"], {}, "already has a run"),
    ("missing folder", ["dags", "list", "--folder", "/no/such"], {}, "--folder /no/such does not"),
    ("unknown command", ["nosuch"], {}, "No such command 'nosuch'"),
    ("unknown option", ["run", "good", "--bogus"], {}, "No such option '--bogus'"),
    ("missing argument", ["pools", "set", "tiny"], {}, "Missing argument 'SLOTS'"),
    # DAG files that break
    ("DAG file raises", ["run", f"{D}/raises.py"], {}, "RuntimeError: broken at import"),
    ("DAG file exits", ["dags", "trigger", f"{D}/exits.py"], {}, "SystemExit: 3"),
    ("syntax error", ["run", f"{D}/syntax.py"], {}, "SyntaxError: '(' was never closed"),
    ("syntax error, trigger", ["dags", "trigger", f"{D}/syntax.py"], {}, "SyntaxError"),
    ("broken files hinted", ["run", "nope"], {}, "3 files failed to import"),
    # bad --conf
    ("bad JSON", ["run", "good", "--conf", "{not json"], {}, "--conf is not valid JSON"),
    ("JSON not an object", ["dags", "trigger", "good", "--conf", "[1]"], {}, "JSON object"),
    # numbers
    ("negative slots", ["pools", "set", "p", "-1"], {}, "slots must be >= 0, got -1"),
    ("negative slots first", ["pools", "set", "p", "-3", "--description", "d"], {}, "got -3"),
    ("fractional slots", ["pools", "set", "p", "-1.5"], {}, "'-1.5' is not a valid integer"),
    ("non-numeric slots", ["pools", "set", "p", "many"], {}, "'many' is not a valid integer"),
    ("empty pool name", ["pools", "set", " ", "3"], {}, "pool name must not be empty"),
    ("try zero", ["tasks", "logs", "good", "a", "r1", "--try", "0"], {}, "--try must be >= 1"),
    ("try negative", ["tasks", "logs", "good", "a", "r1", "--try", "-2"], {}, "got -2"),
    # configuration: env and file, key and value
    ("config key", ["config", "get", "core", "nope"], {}, "unknown config key [core] nope"),
    ("config section", ["config", "get", "nope", "x"], {}, "unknown config section [nope]"),
    (
        "env value",
        ["pools", "list"],
        {"AIRDASK__CORE__PARALLELISM": "lots"},
        "[core] parallelism: expected int, got 'lots'",
    ),
    (
        "env negative",
        ["run", "good"],
        {"AIRDASK__CORE__PARALLELISM": "-1"},
        "[core] parallelism: must be >= 0, got '-1'",
    ),
    (
        "env timeout",
        ["scheduler"],
        {"AIRDASK__DASK__CONNECT_TIMEOUT": "0"},
        "[dask] connect_timeout: must be > 0",
    ),
    ("env key", ["config", "list"], {"AIRDASK__CORE__NOPE": "1"}, "AIRDASK__CORE__NOPE: unknown"),
    ("env name", ["dags", "list"], {"AIRDASK__CORE": "1"}, "expected AIRDASK__SECTION__KEY"),
    (
        "env level",
        ["db", "check"],
        {"AIRDASK__LOGGING__LOGGING_LEVEL": "LOUD"},
        "'LOUD' is not one of DEBUG",
    ),
    ("file key", ["config", "list"], {"AIRDASK_CONFIG": f"{C}/typo.cfg"}, "[core] paralelism"),
    ("file section", ["run", "good"], {"AIRDASK_CONFIG": f"{C}/section.cfg"}, "[cores]"),
    ("file negative", ["run", "good"], {"AIRDASK_CONFIG": f"{C}/negative.cfg"}, "got '-4'"),
    ("file choice", ["scheduler"], {"AIRDASK_CONFIG": f"{C}/choice.cfg"}, "'maybe' is not one"),
    ("file syntax", ["db", "init"], {"AIRDASK_CONFIG": f"{C}/garbage.cfg"}, "no section headers"),
    # the database: unreachable, unusable URL; the password never shown
    ("db refused", ["db", "check"], {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": REFUSED_DB}, "refused"),
    ("db refused, init", ["db", "init"], {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": REFUSED_DB}, ""),
    ("db refused, run", ["run", "good"], {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": REFUSED_DB}, ""),
    (
        "db bad port",
        ["pools", "list"],
        {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": f"postgresql://u:{SECRET}@h:port/x"},
        "[database] sql_alchemy_conn postgresql://u:***@h:port/x: ValueError",
    ),
    (
        "db unknown dialect",
        ["db", "check"],
        {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": f"nosuchdb://u:{SECRET}@h/x"},
        "Can't load plugin: sqlalchemy.dialects:nosuchdb",
    ),
    # an unreachable Dask cluster (the connect timeout shortened: the default is a test below)
    (
        "cluster refused",
        ["run", "good", "--cluster", UNREACHABLE],
        {"AIRDASK__DASK__CONNECT_TIMEOUT": "0.5"},
        f"cannot reach the Dask cluster at {UNREACHABLE}: OSError: Timed out",
    ),
    (
        "cluster refused, scheduler",
        ["scheduler", "--cluster", UNREACHABLE],
        {
            "AIRDASK__DASK__CONNECT_TIMEOUT": "0.5",
            "AIRDASK__SCHEDULER__EXECUTOR_START_TIMEOUT": "0",  # a daemon waits 120 s at first
        },
        "cannot reach the Dask cluster",
    ),
    (
        "cluster from config",
        ["run", "good", "--executor", "DaskExecutor"],
        {"AIRDASK__DASK__CONNECT_TIMEOUT": "0.5", "AIRDASK__DASK__CLUSTER_ADDRESS": UNREACHABLE},
        "cannot start DaskExecutor",
    ),
]


def _fill(text: str, world: World) -> str:
    return text.replace(D, str(world.dags)).replace(C, str(world.cfg))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "env", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mistake_is_one_line_and_writes_nothing(
    world: World,
    caplog: pytest.LogCaptureFixture,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    before = snapshot(world)
    caplog.clear()
    code, out, err = invoke(
        world, [_fill(a, world) for a in args], {k: _fill(v, world) for k, v in env.items()}
    )
    lines = one_line(err, caplog.records)
    assert code != 0, (args, out, err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert message in lines[0], lines[0]
    assert SECRET not in out + err
    assert snapshot(world) == before


def test_every_command_reads_negative_numbers_as_arguments() -> None:
    """No airdask command of the CLI is left with click's plain classes."""
    from airdask.cli import _add_optional_groups
    from airdask.cli import cli as root
    from airdask.cli.common import Command, Group

    _add_optional_groups()

    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for path, command in walk(root, "airdask"):
        if not command.callback.__module__.startswith("airdask.cli"):
            continue  # an executor's own commands (airdask dask ...) pass options through
        assert isinstance(command, Group if hasattr(command, "commands") else Command), path


# -- across the process boundary -------------------------------------------------------------


def _assert_one_line(result: Any, message: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_in_a_real_process(world: World) -> None:
    env = {k: v for k, v in world.env().items() if v is not None and k != "AIRDASK_HOME"}
    before = snapshot(world)
    cases = [
        (["pools", "set", "tiny", "-1"], {}, "pool 'tiny': slots must be >= 0, got -1"),
        (["run", f"{world.dags}/syntax.py"], {}, "SyntaxError: '(' was never closed"),
        (["dags", "trigger", f"{world.dags}/exits.py"], {}, "SystemExit: 3"),
        (["db", "check"], {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": REFUSED_DB}, "refused"),
    ]
    for args, extra, message in cases:
        result = cli(*args, home=world.home, env={**env, **extra}, timeout=60)
        _assert_one_line(result, message)
    assert snapshot(world) == before


@pytest.mark.timeout(120)
def test_unreachable_cluster_fails_within_the_default_connect_timeout(world: World) -> None:
    env = {k: v for k, v in world.env().items() if v is not None and k != "AIRDASK_HOME"}
    before = snapshot(world)
    result = cli("run", "good", "--cluster", UNREACHABLE, home=world.home, env=env, timeout=60)
    # Dask says how long it tried: the documented default of [dask] connect_timeout.
    _assert_one_line(result, f"{UNREACHABLE} after 5 s")
    assert snapshot(world) == before


@pytest.mark.timeout(120)
def test_a_queue_no_worker_offers_fails_the_task_and_says_so(tmp_path: Path) -> None:
    """Executor-level: the embedded Dask cluster offers no 'gpu' queue; the task fails with
    that reason, the run fails, and the one line on stderr names the queue."""
    home = tmp_path / "home"
    home.mkdir()
    dag_file = tmp_path / "queued.py"
    dag_file.write_text(
        "from airdask.dag import DAG, BashTask\n"
        "with DAG('queued') as dag:\n"
        "    BashTask('a', 'true', queue='gpu')\n"
    )
    env = {
        "AIRDASK__CORE__EXECUTOR": "DaskExecutor",
        "AIRDASK__DASK__N_WORKERS": "1",
        "AIRDASK__DASK__THREADS_PER_WORKER": "1",
        "AIRDASK__DASK__DASHBOARD_ADDRESS": "127.0.0.1:0",
    }
    result = cli("run", str(dag_file), home=home, env=env, timeout=100)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no worker offers queue 'gpu'" in lines[0], result.stderr
    world = World(home, home / "dags", home)
    rows = snapshot(world)["task_instance"]
    assert len(rows) == 1 and "'failed'" in rows[0] and "queue 'gpu'" in rows[0]
