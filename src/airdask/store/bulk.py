"""Executemany of a Core statement with the parameter work done once per statement.

SQLAlchemy's executemany builds a dictionary per row and looks up each parameter's type
processing on every row: for the scheduler's UPDATE-by-primary-key batches that was more
CPU than the database's own work (a pass that writes 512 task instances spent about 60% of
its write-back there). Here the statement is compiled once per dialect, the processors of
the parameters that have one (datetimes on SQLite, say) are looked up once, and the rows
go to the driver as tuples or dictionaries in the statement's own parameter order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

Processor = Callable[[Any], Any]
_Prepared = tuple[str, tuple[str, ...] | None, dict[str, Processor]]
_CACHE: dict[tuple[int, str], tuple[Executable, _Prepared]] = {}


def _prepare(stmt: Executable, connection: Connection) -> _Prepared:
    dialect = connection.dialect
    key = (id(stmt), dialect.name)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is stmt:  # the statement itself is kept: no id reuse
        return hit[1]
    compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    processors: dict[str, Processor] = {}
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    prepared = (compiled.string, order, processors)
    _CACHE[key] = (stmt, prepared)
    return prepared


def execute_many(
    connection: Connection, stmt: Executable, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Execute ``stmt`` once per row of ``rows`` (bound parameter name -> value), as one
    driver executemany. Every row must give every parameter of the statement."""
    if not rows:
        return
    sql, order, processors = _prepare(stmt, connection)
    params: list[Any]
    if order is not None:
        procs = [processors.get(name) for name in order]
        params = [
            tuple(row[n] if p is None else p(row[n]) for n, p in zip(order, procs, strict=True))
            for row in rows
        ]
    else:
        params = [dict(row) for row in rows]
        for name, proc in processors.items():
            for row in params:
                row[name] = proc(row[name])
    connection.exec_driver_sql(sql, params)
