"""The scenarios, at full size (``make chaos``) and short (the CI tests), and their faults.

A fault's times come from its own RNG stream, seeded by the run's seed, the scenario and the
fault's kind, so a seed reproduces every fault's schedule whatever the other faults do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: What a fault does: SIGKILL a Dask worker (nanny and worker) and start another; SIGKILL
#: the airdask scheduler and start another; SIGKILL the Dask scheduler and restart it on the
#: same port after ``down`` seconds; restart PostgreSQL (``pg_ctl restart -m fast``).
KINDS = ("worker", "airdask_scheduler", "dask_scheduler", "postgres")


@dataclass(frozen=True)
class Fault:
    kind: str
    every: tuple[float, float]  # seconds between faults (uniform); the first after the start
    count: int | None = None  # at most this many; None: until the run ends
    down: tuple[float, float] = (0.0, 0.0)  # dask_scheduler: seconds before the restart

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (known: {', '.join(KINDS)})")


@dataclass(frozen=True)
class Scenario:
    name: str
    tasks: int  # tasks between start and end
    faults: tuple[Fault, ...]
    database: str = "sqlite"  # or "postgres" (a private server)
    pooled: int = 0  # the first ``pooled`` middle tasks are in a pool of ``pool_slots``
    pool_slots: int = 2
    deadline: float = 300.0  # seconds from the trigger for the run to end
    parallelism: int | None = None  # [core] parallelism; None: the default (32)

    @property
    def needs_postgres(self) -> bool:
        return self.database == "postgres"


def _scenarios(*, short: bool) -> dict[str, Scenario]:
    n = 40 if short else 300
    worker = Fault("worker", (2.5, 4.0) if short else (4.0, 6.0))
    killer = Fault("airdask_scheduler", (1.5, 3.0) if short else (3.0, 8.0), 6 if short else 5)
    # each kill costs the health check threshold (5 s): a longer run to fit them in
    killed = 60 if short else 300
    dask_down = Fault(
        "dask_scheduler", (3.0, 5.0) if short else (8.0, 20.0), 1 if short else 2, (4.0, 8.0)
    )
    pg = Fault("postgres", (2.0, 4.0) if short else (5.0, 15.0), 3)
    deadline = 120.0 if short else 900.0
    found = [
        Scenario("worker_kills", n, (worker,), deadline=deadline),
        # A few attempts queued per pass (parallelism 8 on 4 Dask threads), as when a DAG
        # is wider than the cluster: a kill lands among submissions, not after them all.
        Scenario("scheduler_kills_sqlite", killed, (killer,), deadline=deadline, parallelism=8),
        Scenario(
            "scheduler_kills_postgres",
            killed,
            (killer,),
            "postgres",
            deadline=deadline,
            parallelism=8,
        ),
        Scenario("dask_scheduler_restart", n, (dask_down,), deadline=deadline),
        Scenario("postgres_restart", n, (pg,), "postgres", deadline=deadline),
        # Half the tasks in the pool: its attempts share submissions (and adoption
        # datasets) with the others, as in a real DAG.
        Scenario(
            "pool_worker_kills",
            32 if short else 120,
            (Fault("worker", (2.0, 3.5) if short else (3.0, 5.0)),),
            pooled=16 if short else 60,
            deadline=deadline,
        ),
    ]
    if not short:
        found.append(
            Scenario(
                "mixed_soak",
                700,
                (
                    Fault("worker", (5.0, 9.0)),
                    Fault("airdask_scheduler", (15.0, 35.0), 5),
                    Fault("dask_scheduler", (40.0, 70.0), 2, (3.0, 8.0)),
                    Fault("postgres", (20.0, 40.0), 4),
                ),
                "postgres",
                pooled=100,
                deadline=1800.0,
                parallelism=16,
            )
        )
    return {s.name: s for s in found}


FULL = _scenarios(short=False)
SHORT = _scenarios(short=True)


#: Faults that hit the airdask scheduler. Each is counted from when the scheduler then
#: running was ready (a kill during a restart's imports would test nothing), and once due
#: it waits for the next command to complete and lands 0.05-0.45 s after: when the
#: scheduler harvests, records and submits, not while it idles between passes.
AFTER_READY = ("airdask_scheduler", "postgres")
#: How long after a completion such a fault lands (uniform, seconds).
AFTER_COMPLETION = (0.05, 0.45)


@dataclass
class FaultClock:
    """When a fault is next due (monotonic seconds), drawn from its own stream.

    The first fault of every kind is counted from when the first airdask scheduler was
    ready; the next one from the last fault, or (for :data:`AFTER_READY` kinds) from when
    the airdask scheduler running after that fault was ready, or (``dask_scheduler``) from
    the Dask scheduler's restart."""

    fault: Fault
    rng: random.Random
    delay: float  # drawn when the previous fault fired (or at the start)
    due: float | None = None  # None: waiting for an airdask scheduler to be ready
    last: float = 0.0
    done: int = 0
    restart_at: float | None = None  # dask_scheduler: down until then
    fire_at: float | None = None  # AFTER_READY kinds: due, and a completion was seen
    times: list[float] = field(default_factory=list)  # seconds after the start

    @classmethod
    def start(cls, fault: Fault, *, seed: int, scenario: str, t0: float) -> FaultClock:
        rng = random.Random(f"{seed}:{scenario}:{fault.kind}")
        delay = rng.uniform(*fault.every)
        return cls(fault, rng, delay, due=t0 + delay, last=t0)

    def exhausted(self) -> bool:
        return self.fault.count is not None and self.done >= self.fault.count

    def waiting_for_completion(self, now: float) -> bool:
        """Due, and waiting for a command to complete (the driver then looks more often)."""
        return (
            self.fault.kind in AFTER_READY
            and self.due is not None
            and now >= self.due
            and self.fire_at is None
            and not self.exhausted()
        )

    def is_due(self, now: float, ready_at: float | None, completed_at: float | None) -> bool:
        """``ready_at``: when the running airdask scheduler was ready; ``completed_at``: when
        the driver last saw a command complete (an ``end`` line)."""
        if self.due is None and ready_at is not None:
            self.due = max(ready_at, self.last) + self.delay
        if self.due is None or now < self.due or self.restart_at is not None or self.exhausted():
            return False
        if self.fault.kind not in AFTER_READY:
            return True
        if self.fire_at is None and completed_at is not None and completed_at >= self.due:
            self.fire_at = completed_at + self.rng.uniform(*AFTER_COMPLETION)
        return self.fire_at is not None and now >= self.fire_at

    def fired(self, now: float, t0: float) -> None:
        self.done += 1
        self.last = now
        self.fire_at = None
        self.times.append(round(now - t0, 2))
        if self.fault.kind == "dask_scheduler":
            self.restart_at = now + self.rng.uniform(*self.fault.down)
        self.delay = self.rng.uniform(*self.fault.every)
        if self.fault.kind in AFTER_READY:
            self.due = None  # counted from the next ready airdask scheduler
        else:
            self.due = (self.restart_at or now) + self.delay
