"""Claims: the row locks that let several schedulers share one PostgreSQL database.

Airflow 2's high-availability model, kept: no scheduler owns a DagRun; each claims what it
works on for the length of one transaction, and skips what another holds.

* A queued run is started by whoever locks it first (``FOR NO KEY UPDATE SKIP LOCKED``):
  the other scheduler skips it, and once the first commits the run is no longer queued.
* A running run is examined (trigger rules, finishing) under the same kind of lock; a run
  another scheduler is examining is left for the next pass (it stays dirty).
* Task instances are queued under a lock on the pool rows (``FOR UPDATE``, waited for) that
  serialises the open-slot arithmetic across schedulers, and each ready TI is itself locked
  ``SKIP LOCKED``: no TI is queued by two schedulers and no pool is over-committed.
* Orphans of a dead scheduler are locked ``SKIP LOCKED`` before they are adopted or reset,
  so two survivors never both take the same TI (see :mod:`.recovery`).

Locks last one transaction. Only two kinds are waited for — the pool rows, whose holders
wait for nothing else, and the task instances an event batch changes, always locked in the
same order (run, then task id) — so schedulers do not wait for each other in a circle. Where
PostgreSQL still aborts a transaction (a lock timeout, a deadlock), the error is transient:
the pass is tried again (see :mod:`.loop`).

SQLite has no row locks (``FOR UPDATE`` renders as nothing there); one scheduler per SQLite
file is enforced instead (:mod:`.jobs`). Processes that own their runs (``airdask run``)
may still share a SQLite file with it: :func:`lock_pools` takes SQLite's write lock so
their open-slot arithmetic is serialised all the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, false, or_, select, text
from sqlalchemy.orm import Session

from airdask.state import DagRunState
from airdask.store.models import DagRun, Pool

RunKey = tuple[str, str]
#: How long a pass waits for another scheduler's pool lock before giving up (and trying
#: again at the next pass). Holders keep it for milliseconds.
POOL_LOCK_TIMEOUT_MS = 10_000


def in_runs(runs: Sequence[RunKey]) -> ColumnElement[bool]:
    """``DagRun`` is one of ``runs``."""
    if not runs:
        return false()
    return or_(*[(DagRun.dag_id == d) & (DagRun.run_id == r) for d, r in runs])


def run_scope(job_id: int | None, run_filter: Sequence[RunKey] | None) -> ColumnElement[bool]:
    """The runs a job may work on: its own (``run_filter``), else every run not owned by
    another job (``airdask run`` owns its run while its job lives; see :mod:`.recovery`)."""
    if run_filter is not None:
        return in_runs(run_filter)
    return DagRun.scheduled_by_job_id.is_(None) | (DagRun.scheduled_by_job_id == job_id)


def claim_queued_runs(session: Session, scope: ColumnElement[bool]) -> list[DagRun]:
    """Queued runs in ``scope`` locked for this transaction; runs another scheduler is
    starting are skipped."""
    stmt = (
        select(DagRun)
        .where(DagRun.state == DagRunState.QUEUED.value, scope)
        .order_by(DagRun.queued_at)
        .with_for_update(skip_locked=True, key_share=True)
    )
    return list(session.scalars(stmt))


def claim_running_runs(
    session: Session, keys: Iterable[RunKey]
) -> tuple[dict[RunKey, DagRun], set[RunKey]]:
    """Lock the running runs among ``keys`` for this transaction.

    Returns ``(claimed, busy)``: the runs locked, and those another scheduler holds (to be
    looked at again later). Keys of runs that are not running are in neither."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}, set()
    running = DagRun.state == DagRunState.RUNNING.value
    stmt = (
        select(DagRun)
        .where(in_runs(wanted), running)
        .order_by(DagRun.dag_id, DagRun.run_id)
        .with_for_update(skip_locked=True, key_share=True)
    )
    claimed = {(run.dag_id, run.run_id): run for run in session.scalars(stmt)}
    rest = [key for key in wanted if key not in claimed]
    busy: set[RunKey] = set()
    if rest:  # locked by another, or not running: only a read tells them apart
        rows = session.execute(select(DagRun.dag_id, DagRun.run_id).where(in_runs(rest), running))
        busy = {(dag_id, run_id) for dag_id, run_id in rows}
    return claimed, busy


def lock_pools(session: Session) -> dict[str, int]:
    """Every pool's slots, with the pool rows locked until the transaction ends.

    On PostgreSQL another scheduler's lock is waited for (at most
    :data:`POOL_LOCK_TIMEOUT_MS`, then the statement fails and the pass is tried again).
    On SQLite the database write lock is taken instead."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text("UPDATE slot_pool SET slots = slots WHERE 0 = 1"))
    elif dialect == "postgresql":
        session.execute(text(f"SET LOCAL lock_timeout = {POOL_LOCK_TIMEOUT_MS}"))
    stmt = select(Pool.name, Pool.slots).order_by(Pool.name).with_for_update()
    return {name: slots for name, slots in session.execute(stmt)}
