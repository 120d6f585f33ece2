"""How long the scheduler's loop waits between two passes, and for what.

A pass has a fixed cost (its queries, its commit) beside the cost of what it moves. Passing
again at once after a pass that took in a handful of outcomes spends that fixed cost on a
handful more: in a 10,000-task fan-out on two cores the loop passed every 8 ms for 8
outcomes, and the CPU it burnt so was the cluster's (ADR 0014). So while attempts run, a
pass that moved little waits for a batch of outcomes, up to ``[scheduler] batch_wait``;
the executors wake it as soon as the batch is in (:class:`~airdask.executors.arrivals.
Arrivals`), so a lone attempt's successor still starts at once. A pass that had more to do
than outcomes to record (a run started or settled, a full budget queued) passes again at
once; a pass that moved nothing waits ``loop_interval``, or until the first outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airdask.scheduler.loop import PassResult

#: The most outcomes a pass waits for: past this its fixed cost is a small share.
PASS_BATCH = 32
#: ... and at most this share of the attempts in flight, so they never all wait on a few.
IN_FLIGHT_SHARE = 4


@dataclass(frozen=True)
class Pause:
    """Wait until ``outcomes`` arrived (since the pass collected them) or ``seconds`` passed."""

    outcomes: int
    seconds: float


def pause_after(
    result: PassResult,
    *,
    in_flight: int,
    full_budget: int,
    loop_interval: float,
    batch_wait: float,
) -> Pause | None:
    """The wait before the next pass (None: pass again at once); see the module docstring.

    :param in_flight: attempts the executors hold (queued or running).
    :param full_budget: the most a pass queues; a pass that queued that many may have more.
    """
    if not result.busy:
        return Pause(1, loop_interval)
    if batch_wait <= 0 or in_flight <= 0:
        return None
    if result.created_runs or result.started_runs or result.settled:
        return None
    if result.queued >= full_budget:
        return None
    wanted = max(1, min(PASS_BATCH, in_flight // IN_FLIGHT_SHARE))
    return Pause(wanted, batch_wait)
