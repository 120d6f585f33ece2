"""What the scheduler took from its executor but has not yet written to the database.

When the database is out, a pass ends early; what the executor already handed over must not
be lost with it. :class:`Held` keeps three kinds of it until a later pass writes them:

* events taken from ``executor.get_event_buffer()``: written before the executor is
  heartbeaten again (see :mod:`.loop`; a heartbeat tells the executor that its last
  handover is recorded);
* adoptions: attempts ``try_adopt_task_instances`` took over while the transaction that was
  to record them failed (the executor tracks them now, so they are recorded as this job's
  unless another scheduler took them meanwhile);
* Log rows about callbacks that already ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from airdask.state import LIVE_VALUES, TaskInstanceKey, TaskInstanceState
from airdask.store.models import Log, TaskInstance, utcnow

S = TaskInstanceState
#: (state, info), as in the executor's event buffer.
Event = tuple[TaskInstanceState | None, Any]
_TERMINAL = (S.SUCCESS, S.FAILED)


def merge_events(held: dict[TaskInstanceKey, Event], new: dict[TaskInstanceKey, Event]) -> None:
    """Add ``new`` events to ``held``: a later event for a key replaces an earlier one,
    except that progress (queued/running) never replaces an outcome."""
    for key, event in new.items():
        earlier = held.get(key)
        if earlier is not None and earlier[0] in _TERMINAL and event[0] not in _TERMINAL:
            continue
        held[key] = event


@dataclass
class Held:
    events: dict[TaskInstanceKey, Event] = field(default_factory=dict)
    #: (attempt adopted, the job it was adopted from)
    adoptions: list[tuple[TaskInstanceKey, int | None]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.adoptions or self.logs)

    def write_adoptions(self, session: Session, job_id: int) -> None:
        """Record held adoptions as ``job_id``'s, each only if its task instance is still
        that attempt, live, and with the job it was adopted from."""
        for key, old in self.adoptions:
            queued_by = (
                TaskInstance.queued_by_job_id.is_(None)
                if old is None
                else TaskInstance.queued_by_job_id == old
            )
            result = session.execute(
                update(TaskInstance)
                .where(
                    TaskInstance.dag_id == key.dag_id,
                    TaskInstance.task_id == key.task_id,
                    TaskInstance.run_id == key.run_id,
                    TaskInstance.map_index == key.map_index,
                    TaskInstance.try_number == key.try_number,
                    TaskInstance.state.in_(LIVE_VALUES),
                    queued_by,
                )
                .values(queued_by_job_id=job_id, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0):
                session.add(
                    Log(
                        event="adopted",
                        dag_id=key.dag_id,
                        task_id=key.task_id,
                        run_id=key.run_id,
                        map_index=key.map_index,
                        try_number=key.try_number,
                        extra=f"from scheduler job {old} by job {job_id} (recorded late)",
                    )
                )

    def write_logs(self, session: Session) -> None:
        if self.logs:
            session.execute(insert(Log), self.logs)
