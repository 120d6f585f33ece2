"""Executemany of a Core statement with the parameter work done once per statement.

SQLAlchemy's executemany builds a dictionary per row and looks up each parameter's type
processing on every row: for the scheduler's UPDATE-by-primary-key batches that was more
CPU than the database's own work (a pass that writes 512 task instances spent about 60% of
its write-back there). Here the statement is compiled once per dialect, the processors of
the parameters that have one (datetimes on SQLite, say) are looked up once, literal values
of the statement are processed once, and the rows go to the driver as tuples or
dictionaries in the statement's own parameter order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Prepared:
    sql: str
    order: tuple[str, ...] | None  # parameter names in order, for a positional paramstyle
    processors: dict[str, Processor]  # of the row parameters that have one
    constants: dict[str, Any]  # the statement's own literal values, processed


# Statements are module-level constants or made by a cached function: a few dozen at most.
@functools.lru_cache(maxsize=256)
def _prepare(stmt: Executable, dialect: Dialect) -> _Prepared:
    compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    processors: dict[str, Processor] = {}
    constants: dict[str, Any] = {}
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if not bind.required:  # a literal of the statement (state == 'running', say)
            value = bind.effective_value
            constants[name] = processor(value) if processor is not None else value
        elif processor is not None:
            processors[name] = processor
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    return _Prepared(compiled.string, order, processors, constants)


def execute_many(
    connection: Connection, stmt: Executable, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Execute ``stmt`` once per row of ``rows`` (bound parameter name -> value) as one
    driver executemany; return the rows it matched in all. Every row gives every parameter
    of the statement that has no value of its own."""
    if not rows:
        return 0
    prep = _prepare(stmt, connection.dialect)
    params: list[Any]
    if prep.order is not None:
        constants = prep.constants
        steps = [
            (name, prep.processors.get(name), name in constants, constants.get(name))
            for name in prep.order
        ]
        params = [
            tuple(
                value if fixed else (row[name] if proc is None else proc(row[name]))
                for name, proc, fixed, value in steps
            )
            for row in rows
        ]
    else:
        params = [{**prep.constants, **row} for row in rows]
        for name, proc in prep.processors.items():
            for row in params:
                row[name] = proc(row[name])
    return int(connection.exec_driver_sql(prep.sql, params).rowcount)
