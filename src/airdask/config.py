"""Typed settings: ``$AIRDASK_HOME/airdask.cfg`` plus ``AIRDASK__SECTION__KEY`` overrides.

Nothing here runs at import time: a :class:`Config` is built by :func:`load_config` when an
object that needs settings is constructed, and is a plain immutable value after that.

Precedence, highest first: environment variable, ini file, the default in :data:`OPTIONS`.
Defaults may refer to ``{AIRDASK_HOME}``. Every option, its type and its default are listed
in :data:`OPTIONS`; ``airdask config list`` prints them with where each value came from.

Code reads settings through the typed view of each section, ``config.core.parallelism``
(an ``int``), ``config.dask.connect_timeout`` (a ``float``): one frozen dataclass per
section, whose fields are the section's keys. Adding an option is one :class:`Option` entry
in :data:`OPTIONS` plus one field of the same name and type in its section's dataclass
(``tests/test_config.py`` checks that the two agree). :meth:`Config.get` stays for the
places that name an option at run time (``airdask config get``).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

ENV_PREFIX = "AIRDASK__"
#: What an option's value can be (its :attr:`Option.type`).
OptionValue = str | int | float | bool


class ConfigError(ValueError):
    """A configuration problem: unknown section/key or a value of the wrong type."""


@dataclass(frozen=True)
class Option:
    """One setting. ``sensitive`` values (credentials, or URLs that may carry them) are
    masked wherever airdask shows them; ``at_least``/``more_than`` bound a number."""

    type: type  # str, int, float or bool
    default: str
    help: str
    choices: tuple[str, ...] = ()
    sensitive: bool = False
    at_least: float | None = None
    more_than: float | None = None

    def bounds(self) -> str:
        """The allowed range as text (``">= 0"``), empty when unbounded."""
        if self.more_than is not None:
            return f"> {self.more_than:g}"
        if self.at_least is not None:
            return f">= {self.at_least:g}"
        return ""


#: Every setting airdask reads, with its default. This table is the documentation.
OPTIONS: dict[str, dict[str, Option]] = {
    "core": {
        "executor": Option(
            str,
            "DaskExecutor",
            "Executors the scheduler hosts, comma-separated, the first the default (a task "
            "picks another with executor=): built-in names (SequentialExecutor, LocalExecutor, "
            "DebugExecutor, DaskExecutor, LocalDaskExecutor) or module.path.ClassName import "
            "paths, each with an optional alias: prefix (celery:my.pkg.CeleryExecutor).",
        ),
        "parallelism": Option(
            int,
            "32",
            "Most task instances running at once per scheduler, across all its executors "
            "(0 = unlimited); also each executor's own limit unless it is given another.",
            at_least=0,
        ),
        "dags_folder": Option(str, "{AIRDASK_HOME}/dags", "Folder of DAG files (Python modules)."),
        "default_pool_slots": Option(
            int, "128", "Slots of default_pool when db init creates it.", at_least=0
        ),
        "max_result_bytes": Option(
            int,
            "65536",
            "Largest return value of a PythonTask that is kept (JSON, or cloudpickle); a "
            "larger one fails the task. It travels with the outcome (the Dask scheduler keeps "
            "the last 1000 outcomes of its topic in memory) and is stored in the database: "
            "return paths, counts, ids, not data.",
            at_least=0,
        ),
    },
    "database": {
        "sql_alchemy_conn": Option(
            str,
            "sqlite:///{AIRDASK_HOME}/airdask.db",
            "SQLAlchemy URL of the metadata database (SQLite file or postgresql+psycopg://...).",
            sensitive=True,
        ),
    },
    "logging": {
        "base_log_folder": Option(str, "{AIRDASK_HOME}/logs", "Root folder of task logs."),
        "logging_level": Option(
            str,
            "WARNING",
            "Level of the `airdask` command's log (stderr); -v/-vv (INFO/DEBUG) and -q (ERROR) "
            "override it.",
            ("DEBUG", "INFO", "WARNING", "ERROR"),
        ),
    },
    "dask": {
        "cluster_address": Option(
            str, "", "tcp:// or tls:// address of an existing Dask scheduler; empty = embedded."
        ),
        "connect_timeout": Option(
            float,
            "5",
            "Seconds to wait for the Dask scheduler at cluster_address (or --cluster) to "
            "answer before giving up with an error.",
            more_than=0,
        ),
        "tls_ca": Option(str, "", "CA certificate file for mutual TLS."),
        "tls_cert": Option(str, "", "Client certificate file for mutual TLS."),
        "tls_key": Option(str, "", "Client private key file for mutual TLS."),
        "pool_resources": Option(
            str,
            "auto",
            "Pools no worker offers as a resource: auto (run unconstrained, warn once), "
            "strict (fail the task) or off (never constrain by pool).",
            ("auto", "strict", "off"),
        ),
        "n_workers": Option(int, "2", "Workers of the embedded cluster.", at_least=1),
        "threads_per_worker": Option(
            int, "2", "Threads per worker of the embedded cluster.", at_least=1
        ),
        "dashboard_address": Option(str, ":8787", "Dashboard address of the embedded cluster."),
        "scheduler_process": Option(
            bool,
            "true",
            "Run the embedded cluster's Dask scheduler in a process of its own (false: in "
            "airdask's process, which starts about a second sooner, but then the two "
            "schedulers share one GIL and large runs go slower).",
        ),
        "dispatch": Option(
            str,
            "assign",
            "How attempts reach Dask's workers: assign (each goes to a worker as it is "
            "submitted, so a worker starts its next attempt without a round trip to the "
            "scheduler) or queue (a large fan-out waits in Dask's scheduler queue like other "
            "clients' tasks: fairer on a cluster shared with other Dask work). ADR 0015.",
            ("assign", "queue"),
        ),
        "allowed_failures": Option(
            int,
            "1",
            "Worker deaths a task survives before KilledWorker (embedded cluster).",
            at_least=0,
        ),
        "log_max_bytes": Option(
            int, "2097152", "Largest task log a worker sends back (tail).", at_least=0
        ),
    },
    "scheduler": {
        "loop_interval": Option(
            float,
            "0.05",
            "Most seconds the scheduler idles when nothing moved (a Dask outcome ends the wait).",
            at_least=0,
        ),
        "batch_wait": Option(
            float,
            "0.05",
            "Most seconds a pass that took in few outcomes waits for more while attempts "
            "run, so that a pass's fixed cost is spread over a batch; the Dask executor ends the "
            "wait once the batch is in (0: pass again at once).",
            at_least=0,
        ),
        "job_heartbeat_sec": Option(
            float, "5", "Seconds between scheduler job heartbeats.", more_than=0
        ),
        "scheduler_health_check_threshold": Option(
            float,
            "30",
            "Seconds without a heartbeat after which a scheduler job is dead.",
            more_than=0,
        ),
        "orphaned_tasks_check_interval": Option(
            float,
            "30",
            "Seconds between checks for task instances of dead schedulers.",
            at_least=0,
        ),
        "task_queued_timeout": Option(
            float,
            "600",
            "Seconds a task instance may stay queued before it is revoked.",
            more_than=0,
        ),
        "dashboard_summary_interval": Option(
            float,
            "2",
            "Seconds between summaries published to the airdask dashboard page.",
            at_least=0,
        ),
        "num_stuck_in_queued_retries": Option(
            int,
            "2",
            "Times a stuck-in-queued task instance is rescheduled before it fails.",
            at_least=0,
        ),
        "executor_start_timeout": Option(
            float,
            "120",
            "How long `airdask scheduler` keeps trying to start an executor whose cluster is "
            "unreachable (a Dask scheduler that restarts, say) before it gives up; "
            "`airdask run` gives up at once.",
            at_least=0,
        ),
    },
    "celery": {
        "broker_url": Option(
            str,
            "redis://127.0.0.1:6379/0",
            "Celery broker of CeleryExecutor: redis://host:port/db or amqp://user:pass@host:port/vhost.",
            sensitive=True,
        ),
        "result_backend": Option(
            str,
            "",
            "Where workers store outcomes: a redis:// URL, or db+<SQLAlchemy URL> (a database "
            "table). Empty: the broker when it is Redis, else db+ [database] sql_alchemy_conn.",
            sensitive=True,
        ),
        "default_queue": Option(
            str, "default", "Celery queue of tasks whose queue is not set (or is 'default')."
        ),
        "worker_concurrency": Option(
            int, "8", "Processes of `airdask celery worker` (its --concurrency).", at_least=1
        ),
        "allow_pickle": Option(
            bool,
            "false",
            "Let PythonCommand tasks travel as cloudpickle (inside the JSON message). Anyone who "
            "can write to the broker can then run code on the workers; argv commands never "
            "need it.",
        ),
        "operation_timeout": Option(
            float,
            "5",
            "Seconds one broker or result-backend operation (connect, publish, state read) may "
            "take before it counts as failed.",
            more_than=0,
        ),
        "visibility_timeout": Option(
            float,
            "21600",
            "Redis broker: seconds before a task taken by a worker that never acknowledged it "
            "is delivered again. Must exceed the longest task (else it runs twice).",
            more_than=0,
        ),
        "lost_after": Option(
            float,
            "60",
            "Seconds the result backend may stay unreachable before the attempts in flight are "
            "reported outcome-unknown (and retried per their retries).",
            more_than=0,
        ),
        "log_max_bytes": Option(
            int, "2097152", "Largest task log a worker returns with an outcome (tail).", at_least=0
        ),
    },
    "local_dask_executor": {
        "local_queue": Option(str, "local", "Queue whose tasks LocalDaskExecutor runs locally."),
    },
}


@dataclass(frozen=True)
class CoreSettings:
    """``[core]``."""

    executor: str
    parallelism: int
    dags_folder: str
    default_pool_slots: int
    max_result_bytes: int


@dataclass(frozen=True)
class DatabaseSettings:
    """``[database]``."""

    sql_alchemy_conn: str


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``."""

    base_log_folder: str
    logging_level: str


@dataclass(frozen=True)
class DaskSettings:
    """``[dask]``."""

    cluster_address: str
    connect_timeout: float
    tls_ca: str
    tls_cert: str
    tls_key: str
    pool_resources: str
    n_workers: int
    threads_per_worker: int
    dashboard_address: str
    scheduler_process: bool
    dispatch: str
    allowed_failures: int
    log_max_bytes: int


@dataclass(frozen=True)
class SchedulerSettings:
    """``[scheduler]`` (durations in float seconds)."""

    loop_interval: float
    batch_wait: float
    job_heartbeat_sec: float
    scheduler_health_check_threshold: float
    orphaned_tasks_check_interval: float
    task_queued_timeout: float
    dashboard_summary_interval: float
    num_stuck_in_queued_retries: int
    executor_start_timeout: float


@dataclass(frozen=True)
class LocalDaskExecutorSettings:
    """``[local_dask_executor]``."""

    local_queue: str


@dataclass(frozen=True)
class CelerySettings:
    """``[celery]`` (durations in float seconds)."""

    broker_url: str
    result_backend: str
    default_queue: str
    worker_concurrency: int
    allow_pickle: bool
    operation_timeout: float
    visibility_timeout: float
    lost_after: float
    log_max_bytes: int


S = TypeVar("S")


def airdask_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("AIRDASK_HOME") or Path.home() / "airdask").expanduser()


def _convert(section: str, key: str, raw: str, option: Option) -> OptionValue:
    where = f"[{section}] {key}"
    if option.choices and raw not in option.choices:
        raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(option.choices)}")
    if option.type is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected a boolean (true/false), got {raw!r}")
    try:
        value: OptionValue = option.type(raw)
    except ValueError:
        raise ConfigError(f"{where}: expected {option.type.__name__}, got {raw!r}") from None
    if isinstance(value, (int, float)) and not _in_bounds(value, option):
        raise ConfigError(f"{where}: must be {option.bounds()}, got {raw!r}")
    return value


def _in_bounds(value: float, option: Option) -> bool:
    if value != value:  # NaN passes no bound
        return False
    if option.more_than is not None and not value > option.more_than:
        return False
    return option.at_least is None or value >= option.at_least


def _option(section: str, key: str) -> Option:
    if section not in OPTIONS:
        raise ConfigError(f"unknown config section [{section}] (known: {', '.join(OPTIONS)})")
    if key not in OPTIONS[section]:
        known = ", ".join(OPTIONS[section])
        raise ConfigError(f"unknown config key [{section}] {key} (known in [{section}]: {known})")
    return OPTIONS[section][key]


@dataclass(frozen=True)
class ConfigValue:
    value: OptionValue
    raw: str
    source: str  # "default", "file", "env", or "override" (Config.with_overrides)


class Config:
    """Resolved settings. Build with :func:`load_config`; read the typed sections
    (``config.core.parallelism``). Each annotated section attribute below is the typed view
    of the :data:`OPTIONS` section of the same name."""

    core: CoreSettings
    database: DatabaseSettings
    logging: LoggingSettings
    dask: DaskSettings
    scheduler: SchedulerSettings
    local_dask_executor: LocalDaskExecutorSettings
    celery: CelerySettings

    def __init__(self, home: Path, values: dict[tuple[str, str], ConfigValue], path: Path):
        self.home = home
        self.path = path
        self._values = values
        self.core = self._section("core", CoreSettings)
        self.database = self._section("database", DatabaseSettings)
        self.logging = self._section("logging", LoggingSettings)
        self.dask = self._section("dask", DaskSettings)
        self.scheduler = self._section("scheduler", SchedulerSettings)
        self.local_dask_executor = self._section("local_dask_executor", LocalDaskExecutorSettings)
        self.celery = self._section("celery", CelerySettings)

    def _section(self, section: str, cls: type[S]) -> S:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if set(names) != set(OPTIONS[section]):
            raise ConfigError(
                f"[{section}]: {cls.__name__} fields {sorted(names)} differ from the options "
                f"{sorted(OPTIONS[section])}"
            )
        return cls(**{name: self._values[(section, name)].value for name in names})

    def get(self, section: str, key: str) -> OptionValue:
        """One value by name, for code that names options at run time; elsewhere read the
        typed section (``config.core.parallelism``)."""
        _option(section, key)
        return self._values[(section, key)].value

    def source(self, section: str, key: str) -> str:
        _option(section, key)
        return self._values[(section, key)].source

    def items(self) -> list[tuple[str, str, ConfigValue]]:
        return [(s, k, self._values[(s, k)]) for s in OPTIONS for k in OPTIONS[s]]

    def with_overrides(self, overrides: Mapping[tuple[str, str], object]) -> Config:
        """A copy with some values replaced (checked like any other value)."""
        values = dict(self._values)
        for (section, key), value in overrides.items():
            raw = str(value)
            values[(section, key)] = ConfigValue(
                _convert(section, key, raw, _option(section, key)), raw, "override"
            )
        return Config(self.home, values, self.path)


def load_config(environ: Mapping[str, str] | None = None, *, path: Path | None = None) -> Config:
    """Read defaults, the ini file and the environment; raise :class:`ConfigError` on any
    unknown section, key or ill-typed value, naming it."""
    env = os.environ if environ is None else environ
    home = airdask_home(env)
    cfg_path = path or Path(env.get("AIRDASK_CONFIG") or home / "airdask.cfg")
    raw: dict[tuple[str, str], tuple[str, str]] = {
        (s, k): (opt.default, "default") for s, opts in OPTIONS.items() for k, opt in opts.items()
    }
    if cfg_path.exists():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(cfg_path)
        except configparser.Error as exc:
            raise ConfigError(f"{cfg_path}: {exc}") from None
        for section in parser.sections():
            for key, value in parser.items(section):
                try:
                    _option(section, key)
                except ConfigError as exc:
                    raise ConfigError(f"{cfg_path}: {exc}") from None
                raw[(section, key)] = (value, "file")
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2:
            raise ConfigError(f"environment variable {name}: expected AIRDASK__SECTION__KEY")
        section, key = parts[0].lower(), parts[1].lower()
        try:
            _option(section, key)
        except ConfigError as exc:
            raise ConfigError(f"environment variable {name}: {exc}") from None
        raw[(section, key)] = (value, "env")
    values: dict[tuple[str, str], ConfigValue] = {}
    for (section, key), (text, source) in raw.items():
        expanded = text.replace("{AIRDASK_HOME}", str(home))
        option = OPTIONS[section][key]
        values[(section, key)] = ConfigValue(
            _convert(section, key, expanded, option), expanded, source
        )
    return Config(home, values, cfg_path)
