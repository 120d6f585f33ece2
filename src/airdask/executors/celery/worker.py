"""The Celery worker that ``airdask celery worker`` runs.

Celery's own worker, but an unrecoverable error (Celery 5.7's Redis transport raises one
when the broker goes away mid-task) ends it *cold*: its pool processes are killed, and with
them (the runner's reaper) the commands they ran. Celery's default, a warm stop, would wait
for those commands to finish while the broker hands their messages to other workers (acks
late), so two copies of an attempt would run side by side.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.exceptions import WorkerTerminate

log = logging.getLogger(__name__)

#: Exit status after an unrecoverable error (as Celery's EX_FAILURE).
EX_FAILURE = 1


def worker_class(app: Celery) -> Any:
    """``app.Worker`` with a cold stop after an unrecoverable error."""
    base: Any = app.Worker

    class AirdaskWorker(base):  # type: ignore[misc]
        def start(self) -> None:
            try:
                self.blueprint.start(self)
            except WorkerTerminate:
                self.terminate()
            except Exception as exc:
                log.critical(
                    "unrecoverable error: %r; stopping cold (running attempts are killed and "
                    "their messages delivered again)",
                    exc,
                    exc_info=True,
                )
                self.exitcode = EX_FAILURE
                self.terminate()
            except SystemExit as exc:
                self.stop(exitcode=exc.code)
            except KeyboardInterrupt:
                self.stop(exitcode=EX_FAILURE)

    return AirdaskWorker


def run_worker(
    app: Celery,
    *,
    queues: list[str],
    concurrency: int,
    hostname: str,
    loglevel: str,
    without_mingle: bool,
) -> int:
    """Run the worker until it stops; its exit status."""
    worker = worker_class(app)(
        hostname=hostname,
        pool_cls="prefork",
        loglevel=loglevel,
        queues=queues,
        concurrency=concurrency,
        without_gossip=True,
        without_mingle=without_mingle,
    )
    worker.start()
    return int(worker.exitcode or 0)
