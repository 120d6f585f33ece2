"""Schema management: ``airdask db init``, ``db reset`` and ``db check``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from airdask.state import DEFAULT_POOL as DEFAULT_POOL
from airdask.store.models import Base, Pool
from airdask.store.session import Store


class DatabaseError(RuntimeError):
    """The metadata database is unreachable or its schema is missing or incomplete."""


#: Indexes an older airdask made that nothing reads any more, by table: each cost every write
#: of its columns (ADR 0017). :func:`init_db` drops them.
OBSOLETE_INDEXES = {
    "task_instance": ("ix_ti_state", "ix_ti_pool_state"),
    "log": ("ix_log_dttm",),
}


def init_db(store: Store, *, default_pool_slots: int = 128) -> bool:
    """Create missing tables, missing nullable columns of existing tables (a database made
    by an older airdask) and ``default_pool``; drop :data:`OBSOLETE_INDEXES`. Idempotent;
    True if anything was created or dropped."""
    # Every command that opens the database comes here: when the tables are all there, three
    # catalog queries (the tables, every table's columns, every table's indexes), not three
    # per table.
    before = set(inspect(store.engine).get_table_names())
    created = not set(Base.metadata.tables) <= before
    if created:
        Base.metadata.create_all(store.engine)
    created = _complete_old_tables(store, before) or created
    with store.session() as session:
        if session.get(Pool, DEFAULT_POOL) is None:
            session.add(
                Pool(name=DEFAULT_POOL, slots=default_pool_slots, description="Default pool")
            )
            created = True
    return created


def _complete_old_tables(store: Store, tables: set[str]) -> bool:
    """What a table in ``tables`` lacks because an older airdask made it: each nullable
    column (``ALTER TABLE ... ADD COLUMN``; new columns are nullable, so old rows stay
    valid) and each index; and what it has that airdask no longer reads
    (:data:`OBSOLETE_INDEXES`)."""
    names = [name for name in Base.metadata.tables if name in tables]
    if not names:
        return False
    inspector = inspect(store.engine)
    found = inspector.get_multi_columns(filter_names=names)
    columns = {name: {c["name"] for c in cols} for (_, name), cols in found.items()}
    found_indexes = inspector.get_multi_indexes(filter_names=names)
    indexes = {name: {i["name"] for i in idx} for (_, name), idx in found_indexes.items()}
    added = False
    for name in names:
        if name not in columns:  # dropped meanwhile: nothing to add to
            continue
        table = Base.metadata.tables[name]
        for column in table.columns:
            if column.name in columns[name] or not column.nullable:
                continue
            kind = column.type.compile(dialect=store.engine.dialect)
            with store.engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {name} ADD COLUMN "{column.name}" {kind}'))
            added = True
        for index in table.indexes:
            if index.name not in indexes.get(name, set()):
                index.create(store.engine, checkfirst=True)
                added = True
        for obsolete in OBSOLETE_INDEXES.get(name, ()):
            if obsolete in indexes.get(name, set()):
                with store.engine.begin() as conn:
                    conn.execute(text(f"DROP INDEX IF EXISTS {obsolete}"))
                added = True
    return added


#: A bulk insert of at least this many rows on PostgreSQL refreshes the table's statistics.
ANALYZE_MIN_ROWS = 1000


def analyze_after_insert(session: Session, table: str, inserted: int) -> bool:
    """``ANALYZE table`` on PostgreSQL after a bulk insert of ``inserted`` rows (in this
    transaction; it sees them) when the table was never analyzed, or when these rows and
    those changed since its last analysis (``n_mod_since_analyze``: other transactions'
    inserts and updates) are a tenth or more of the rows it had then (autovacuum's rule,
    applied at once); True if it did.

    Why: without statistics for the new rows, PostgreSQL estimates that a run has a row or
    two and reads a task instance by primary key through ``ix_ti_run_state`` instead: every
    row-by-row UPDATE of a 100,000-task run then reads the whole run (measured: 23 ms per
    row, 12 s for the 512 a pass writes; 0.1 ms once analyzed). Autovacuum would analyze
    the table too, but only within a minute or so of the insert; the scheduler writes the
    first of those rows in the same pass. SQLite plans the same statements well without
    statistics."""
    if inserted < ANALYZE_MIN_ROWS or session.get_bind().dialect.name != "postgresql":
        return False
    # A run's inserts one by one are each small beside the table; together they are what
    # the statistics miss (measured: 100 runs of 1,000 analyzed at 11,000 rows made the
    # UPDATEs of a pass 5 times slower than fresh statistics).
    row = session.execute(
        text(
            "SELECT c.reltuples, s.n_mod_since_analyze FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = CAST(:name AS regclass)"
        ),
        {"name": table},
    ).one_or_none()
    if row is not None and row[0] >= 0 and inserted + (row[1] or 0) < row[0] / 10:
        return False
    session.execute(text(f"ANALYZE {table}"))
    return True


def reset_db(store: Store, *, default_pool_slots: int = 128) -> None:
    """Drop every airdask table and create them again (all history is lost)."""
    Base.metadata.drop_all(store.engine)
    init_db(store, default_pool_slots=default_pool_slots)


@dataclass(frozen=True)
class DbStatus:
    url: str
    backend: str
    missing_tables: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing_tables


def check_db(store: Store) -> DbStatus:
    """Connect and compare the tables with the models; raise :class:`DatabaseError` if the
    server cannot be reached."""
    url = store.engine.url.render_as_string(hide_password=True)
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise DatabaseError(f"cannot connect to {url}: {exc}") from exc
    present = set(inspect(store.engine).get_table_names())
    missing = sorted(set(Base.metadata.tables) - present)
    return DbStatus(url, store.engine.url.get_backend_name(), missing)


def require_db(store: Store) -> None:
    status = check_db(store)
    if not status.ok:
        raise DatabaseError(
            f"the metadata database {status.url} has no {', '.join(status.missing_tables)} "
            "table(s): run `airdask db init`"
        )
    with store.session() as session:
        if session.scalar(select(Pool).where(Pool.name == DEFAULT_POOL)) is None:
            raise DatabaseError("default_pool is missing: run `airdask db init`")
