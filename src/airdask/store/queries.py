"""Read-only queries several layers share (so each is written once)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from airdask.store.db import DEFAULT_POOL
from airdask.store.models import Pool

if TYPE_CHECKING:
    from airdask.config import Config

log = logging.getLogger(__name__)


def pool_resources(session: Session) -> dict[str, float]:
    """``{pool: slots}`` of every non-default pool with slots: what Dask workers offer as
    resources so that a task in pool P with ``pool_slots=k`` runs only where ``P: k`` is
    free (``airdask dask worker``, and the embedded cluster)."""
    rows = session.execute(select(Pool.name, Pool.slots)).all()
    return {name: float(slots) for name, slots in rows if name != DEFAULT_POOL and slots > 0}


def pool_resources_of(config: Config) -> dict[str, float]:
    """:func:`pool_resources` from the metadata database of ``config``, or ``{}`` when it
    is absent or not initialised (workers then offer no pool resources; the routing
    policy ``[dask] pool_resources`` says what happens to pool tasks)."""
    from sqlalchemy import inspect

    from airdask.store.session import Store

    try:
        store = Store.from_config(config)
    except Exception as exc:
        log.info("no metadata database for pool resources: %s", exc)
        return {}
    try:
        if "slot_pool" not in inspect(store.engine).get_table_names():
            return {}
        with store.session() as session:
            return pool_resources(session)
    except Exception as exc:
        log.warning("could not read pools for worker resources: %s", exc)
        return {}
    finally:
        store.dispose()
