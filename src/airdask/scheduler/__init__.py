"""The scheduler: the process the executor lives in, and the only writer of the database.

Pure parts (no database, no cluster): :mod:`~airdask.scheduler.rules` (trigger rules and
readiness) and :mod:`~airdask.scheduler.pools` (open-slot accounting). The rest works on the
metadata store: :mod:`~airdask.scheduler.runs` (DagRuns and their task instances),
:mod:`~airdask.scheduler.loop` (one pass, and the long-running loop),
:mod:`~airdask.scheduler.ready` (evaluating and queueing task instances),
:mod:`~airdask.scheduler.events` (persisting executor events),
:mod:`~airdask.scheduler.recovery` (orphans, stuck-in-queued) and
:mod:`~airdask.scheduler.callbacks`.
"""
