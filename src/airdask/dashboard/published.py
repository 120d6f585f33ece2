"""The read side of the dashboard summary: where it lives on the Dask scheduler, and how the
page reads it.

The page runs inside the Dask scheduler process, which has no database credentials and need
not have SQLAlchemy installed: this module imports nothing of the database layer (a test
imports it, and the page, in a fresh interpreter and checks). The summary's layout and its
writer are in :mod:`airdask.dashboard.summary` (the airdask scheduler's side).
"""

from __future__ import annotations

from typing import Any

#: Where the summary lives in the Dask scheduler's metadata store.
METADATA_KEY: tuple[str, str] = ("airdask", "summary")
SUMMARY_VERSION = 1


def read_summary(dask_scheduler: Any) -> dict[str, Any] | None:
    """The summary last published to ``dask_scheduler`` (a ``distributed.Scheduler``), or
    None. Also usable as ``Client.run_on_scheduler(read_summary)``."""
    value = dask_scheduler.get_metadata(list(METADATA_KEY), default=None)
    return value if isinstance(value, dict) else None
