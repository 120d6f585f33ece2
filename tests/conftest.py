"""Fixtures shared by the whole suite: an isolated AIRDASK_HOME and a real PostgreSQL.

The tests mirror the package (``scheduler/``, ``executors/`` with ``dask/`` and ``celery/``,
``dashboard/``, ``cli/``, ``airflow_provider/``, ``e2e/`` for whole runs and clusters; the
pure modules at the top). The helpers, ``*_support.py`` next to this file, are modules on
the test path (pytest puts this folder there); those that define fixtures are loaded as
plugins below, so a test uses their fixtures without importing them. What a user writing an
executor needs too (drain an executor, build task instances) is :mod:`airdask.testing`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airdask.config import Config, load_config
from airdask.store import Store

pytest_plugins = ("dask_support", "celery_support", "cluster_support")

PG_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI a missing service is a failure, not a skip."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh AIRDASK_HOME; AIRDASK__* variables of the caller's shell are removed."""
    for name in list(os.environ):
        if name.startswith("AIRDASK__") or name == "AIRDASK_CONFIG":
            monkeypatch.delenv(name)
    path = tmp_path / "airdask-home"
    path.mkdir()
    monkeypatch.setenv("AIRDASK_HOME", str(path))
    return path


@pytest.fixture
def config(home: Path) -> Config:
    return load_config()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    try:
        from sqlalchemy import create_engine, text
    except ImportError:  # pragma: no cover
        skip_or_fail("SQLAlchemy missing")
    base_url = os.environ.get("AIRDASK_TEST_PG_URL", PG_DEFAULT_URL)
    try:
        admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        skip_or_fail(f"no PostgreSQL server at {base_url}: {type(exc).__name__}")
    name = f"airdask_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each backend: a SQLite file in a folder that does not exist yet (the
    store creates it), then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/sub/airdask.db"
    else:
        url = request.getfixturevalue("pg_url")
    store = Store.from_url(url)
    try:
        yield store
    finally:
        store.dispose()


def pytest_configure(config: pytest.Config) -> None:
    import cloudpickle

    import task_funcs

    cloudpickle.register_pickle_by_value(task_funcs)
