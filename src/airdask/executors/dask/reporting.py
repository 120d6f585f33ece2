"""Turning what arrives for DaskExecutor's attempts into events and logs.

Started and finished events (the runner's, or the keeper's) become RUNNING, SUCCESS and
FAILED events in the executor's buffer, each outcome's log goes to the log writer, and the
attempts reported are remembered so that the executor can acknowledge them to the keeper
once the scheduler recorded them (ADR 0003).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airdask.executors.dask.harvest import Harvested, from_outcome
from airdask.executors.dask.task_logs import LogItem, LogWriter
from airdask.executors.dask.tracking import Tracker
from airdask.executors.events import EventInfo, timestamp
from airdask.state import TaskInstanceKey, TaskInstanceState

#: ``report(key, info)``: the executor's ``success``, ``fail`` or ``running_state``.
Report = Callable[[TaskInstanceKey, EventInfo], None]


class Reporter:
    """See the module docstring; ``external_id(dask key)`` names an attempt in events."""

    def __init__(
        self,
        track: Tracker,
        logs: LogWriter,
        *,
        success: Report,
        fail: Report,
        running: Report,
        external_id: Callable[[str], str],
    ) -> None:
        self.track = track
        self.logs = logs
        self.success = success
        self.fail = fail
        self.running = running
        self.external_id = external_id
        self._reported: list[str] = []

    def take_reported(self) -> list[str]:
        """The Dask keys of the outcomes reported since the last call."""
        reported, self._reported = self._reported, []
        return reported

    def started(self) -> None:
        for name, event in self.track.drain_started():
            key = self.track.ti_key(name)
            if key is None:
                continue
            self.running(
                key,
                EventInfo(
                    f"running on {event.get('worker')}",
                    kind="running",
                    external_executor_id=self.external_id(name),
                    worker=event.get("worker"),
                    hostname=event.get("hostname"),
                    started_at=timestamp(event.get("started_at")),
                ),
            )

    def outcomes(self, arrived: list[tuple[str, dict[str, Any]]]) -> None:
        """Report pushed outcomes (the runner's, or the keeper's)."""
        if arrived:
            self.report({n: from_outcome(o, self.external_id(n)) for n, o in arrived})

    def lose(self, names: list[str], why: str) -> None:
        """Report ``names`` as outcome unknown (``connection_lost``), ``why`` saying why."""
        lost = {}
        for name in names:
            info = EventInfo(
                f"{why}: the outcome of the attempt is unknown",
                kind="connection_lost",
                external_executor_id=self.external_id(name),
            )
            lost[name] = Harvested(TaskInstanceState.FAILED, info, None)
        self.report(lost)

    def report(self, outcomes: Mapping[str, Harvested]) -> None:
        logs: list[LogItem] = []
        for name, harvested in outcomes.items():
            harvested.info.worker = harvested.info.worker or self.track.worker_of(name)
            key = self.track.forget(name)
            if key is None:  # reported already
                continue
            self._reported.append(name)
            text = harvested.log_text
            if text is None:
                text = f"[airdask] {harvested.info.reason}\n"
            worker = harvested.info.worker
            logs.append((key, text, (worker, name) if harvested.log_kept and worker else None))
            if harvested.state is TaskInstanceState.SUCCESS:
                self.success(key, harvested.info)
            else:
                self.fail(key, harvested.info)
        self.logs.submit(logs)
