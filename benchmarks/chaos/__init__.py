"""The chaos suite: a DAG of a few hundred commands under faults, and figures that say
what the faults cost. ``make chaos`` runs every scenario at full size and prints one JSON
line per scenario; ``tests/e2e/test_chaos.py`` runs the short version in CI.

Usage::

    PYTHONPATH=benchmarks:tests python -m chaos [--short] [--scenario NAME ...] [--seed N]
                                                 [--keep]

What every scenario sets up, on its own:

* an AIRDASK_HOME (SQLite in it, or a private PostgreSQL server: ``tests/pg_support.py``;
  never the shared server) with one DAG, ``chaos``: ``start >> t000..tNNN >> end``, each
  task a command (``bash -c``, no Python) that appends ``task try pid start <time>`` to a
  ledger file, sleeps 0.1-1.5 s (drawn from the seed), and appends the same line with
  ``end``. Task and try come from the run context the runner gives an argv attempt
  (``AIRDASK_CTX_TASK_ID``, ``AIRDASK_CTX_TRY_NUMBER``); pid is the command's leader;
  ``retries=3``, ``retry_delay=1``. A pool scenario puts the middle tasks in ``chaos_pool``
  (2 slots, set with ``airdask pools set``; no worker offers it as a resource, so the
  scheduler's slot count is the only limit).
* its own external Dask cluster: ``dask scheduler`` on a free loopback port and 2
  ``dask worker --nthreads 2 --nanny`` subprocesses (``allowed-failures`` 1, as the test
  suite's external clusters), each in its own session.
* the real CLI: ``airdask dags trigger chaos --run-id ...``, then ``airdask scheduler``
  subprocesses (DaskExecutor on that cluster; heartbeat 0.5 s, health check threshold 5 s,
  orphan checks every 1 s, so adoption happens within the scenario).

Faults come at random times from a seeded RNG (the seed is printed in every line;
``--seed`` reproduces the schedule, not the machine's timing), counted from when the first
airdask scheduler is ready (it printed ``scheduler job N running``). A fault that hits the
airdask scheduler (a SIGKILL, a PostgreSQL restart) is counted from when the scheduler
running after the previous one was ready, so that none lands on a scheduler still
importing; once due, it waits for the next command to complete (an ``end`` line) and lands
0.05-0.45 s later, while the scheduler harvests, records and submits, rather than in the
idle gaps between its passes. The harness acts as a process
supervisor: an airdask scheduler or a Dask worker that exits without being told to is
counted and restarted (after 1 s). When the run has ended (or its deadline passed), the
airdask scheduler gets SIGTERM, then the Dask cluster is asked what it still holds, then
the cluster is stopped, then the machine is searched for the run's commands.

The figures; every one is 0 when airdask keeps its promises:

``not_success``
    Task instances of the run not in ``success`` in the database at the end.
``duplicate_completions``
    (task, try) pairs with more than one ``end`` line in the ledger: the command of one try
    completed more than once. Not counted (``info.completed_as_host_died``, reported
    apart): a first completion that ended within ``HOST_DEATH_WINDOW`` (0.25 s) of the
    SIGKILL of a worker, where the command finished in the instant its host died, before
    anything could report it; Dask runs such a try again, and no executor can tell that
    apart from a command that did not finish (docs/adr/0004).
``concurrent_attempts``
    Tasks with two attempts (two command leaders, of the same try or of two tries) alive at
    the same moment. An attempt is alive from its ``start`` line (or first sighting) to its
    ``end`` line (or last sighting); the harness samples the live commands in ``/proc``
    every 0.2 s, so an attempt killed before writing ``end`` still has a span. Spans that
    only touch do not count.
``success_without_end``
    Task instances recorded ``success`` whose recorded try has no ``end`` line.
``leaked_processes``
    Processes of the run's commands (found by ``AIRDASK_CTX_RUN_ID`` in their environment,
    a value unique to the scenario) still alive 10 s after the airdask scheduler, every Dask
    worker and the Dask scheduler have stopped.
``pool_oversubscribed``
    The most attempts of ``chaos_pool`` tasks alive at one moment (spans as above) minus the
    pool's slots, or 0; only in pool scenarios.
``dask_keys_held``
    Tasks the Dask scheduler still knows 8 s after the last airdask scheduler stopped (it
    was the only client).
``datasets_held``
    Datasets still published on the Dask scheduler (``Client.list_datasets()``) then.
``scheduler_exits``
    airdask scheduler processes that exited without being SIGKILLed or told to stop.
``hung``
    1 if the run was not ``success``/``failed`` within the scenario's deadline, plus 1 if the
    last airdask scheduler did not exit within 60 s of SIGTERM.

``info`` explains them: the run's state, TI states, total tries, ledger starts, extra
completions, failed tries (and how many of those had an ``end`` line: a try recorded failed
although its command ended, issue 15 point 6 when the outcome had been pushed), failure
reasons, adoptions, orphan resets, ignored events, the fault times, restarts, and examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The harness reuses the test suite's helpers (a private PostgreSQL server, wait_for).
_TESTS = str(Path(__file__).resolve().parents[2] / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
