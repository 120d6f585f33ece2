"""From the ledger, the process samples and the database to the figures (defined in the
package docstring, :mod:`chaos`)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.home import POOL, Results
from chaos.procs import live_attempts

#: One attempt as the suite sees it: (task, try, pid of its command's leader).
AttemptKey = tuple[str, int, int]


@dataclass
class Attempt:
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    first_seen: float | None = None  # by the process sampler
    last_seen: float | None = None

    def interval(self) -> tuple[float, float]:
        """When it was alive: from its first sign of life to its last."""
        marks = [*self.starts, *self.ends]
        marks += [t for t in (self.first_seen, self.last_seen) if t is not None]
        return min(marks), max(marks)


class Sampler:
    """Samples the live ledger commands; remembers when each attempt was seen alive."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.seen: dict[AttemptKey, list[float]] = {}  # [first, last]
        self.samples = 0

    def sample(self) -> None:
        now = time.time()
        for pid, (task, try_number) in live_attempts(self.ledger).items():
            span = self.seen.setdefault((task, try_number, pid), [now, now])
            span[1] = now
        self.samples += 1


class Completions:
    """Follows the ledger as it grows: when the last ``end`` line was seen (monotonic)."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.offset = 0
        self.seen: float | None = None

    def latest(self) -> float | None:
        with open(self.ledger, "rb") as fh:
            fh.seek(self.offset)
            new = fh.read()
        complete = new[: new.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        if b" end " in complete:
            self.seen = time.monotonic()
        return self.seen


def read_ledger(path: Path) -> tuple[dict[AttemptKey, Attempt], int]:
    """Attempts by (task, try, pid), and the number of lines that could not be read."""
    attempts: dict[AttemptKey, Attempt] = defaultdict(Attempt)
    bad = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        try:
            task, try_text, pid, kind, stamp = parts
            key = (task, int(try_text), int(pid))
            moment = float(stamp)
        except ValueError:
            bad += 1
            continue
        if kind == "start":
            attempts[key].starts.append(moment)
        elif kind == "end":
            attempts[key].ends.append(moment)
        else:
            bad += 1
    return dict(attempts), bad


def merge_samples(attempts: dict[AttemptKey, Attempt], sampler: Sampler) -> None:
    for key, (first, last) in sampler.seen.items():
        attempt = attempts.setdefault(key, Attempt())
        attempt.first_seen, attempt.last_seen = first, last


def _overlaps(spans: list[tuple[float, float, AttemptKey]]) -> list[tuple[AttemptKey, AttemptKey]]:
    """Pairs of attempts alive at the same moment: open intervals that intersect (an
    attempt seen at one instant only counts when that instant is inside another's span)."""
    spans = sorted(spans)
    pairs = []
    for i, (start, end, key) in enumerate(spans):
        for other_start, other_end, other in spans[i + 1 :]:
            if other_start >= end:
                break  # sorted by start: no later span begins before this one ends
            if start < other_end:
                pairs.append((key, other))
    return pairs


def peak_concurrency(spans: Iterable[tuple[float, float]]) -> int:
    # at one instant an end is counted before a start: back-to-back attempts do not overlap
    moments = sorted(m for s, e in spans for m in ((s, 1), (e, -1)))
    current = peak = 0
    for _, delta in moments:
        current += delta
        peak = max(peak, current)
    return peak


#: Seconds around a worker's SIGKILL within which a completion counts as one its host died
#: before reporting (see ``duplicate_completions`` in the package docstring).
HOST_DEATH_WINDOW = 0.25


def compute(
    results: Results,
    attempts: dict[AttemptKey, Attempt],
    *,
    pool_slots: int,
    leaked: int,
    held: tuple[int, int],
    scheduler_exits: int,
    hung: int,
    host_deaths: Iterable[float] = (),
) -> tuple[dict[str, int], dict[str, Any]]:
    """The figures (each 0 when all is well) and the context that explains them;
    ``host_deaths`` are the wall-clock times at which workers were SIGKILLed."""
    ends_by_try: Counter[tuple[str, int]] = Counter()
    first_end: dict[tuple[str, int], float] = {}
    for (task, try_number, _pid), attempt in attempts.items():
        ends_by_try[(task, try_number)] += len(attempt.ends)
        if attempt.ends:
            key = (task, try_number)
            first_end[key] = min(first_end.get(key, min(attempt.ends)), min(attempt.ends))
    deaths = sorted(host_deaths)
    twice = [key for key, count in ends_by_try.items() if count > 1]
    as_host_died = [
        key
        for key in twice
        if any(abs(first_end[key] - death) <= HOST_DEATH_WINDOW for death in deaths)
    ]
    by_task: dict[str, list[tuple[float, float, AttemptKey]]] = defaultdict(list)
    for key, attempt in attempts.items():
        by_task[key[0]].append((*attempt.interval(), key))
    concurrent = {task: pairs for task, spans in by_task.items() if (pairs := _overlaps(spans))}
    pooled = {task for task, (_s, _n, pool) in results.tis.items() if pool == POOL}
    pool_spans = [a.interval() for k, a in attempts.items() if k[0] in pooled]
    peak = peak_concurrency(pool_spans)
    success_no_end = [
        task
        for task, (state, try_number, _pool) in results.tis.items()
        if state == "success" and ends_by_try[(task, try_number)] == 0
    ]
    failed_tries = {
        (t, n): extra
        for event, t, n, extra, _at in results.logs
        if event in ("up_for_retry", "failed") and t is not None and n is not None
    }
    recorded = {(t, n): at for event, t, n, _x, at in results.logs if event == "success"}
    # A command started again after the database had its try's success: a rerun of work
    # already harvested (the others raced a kill against the outcome's report).
    reruns = {
        (t, n)
        for (t, n, _pid), a in attempts.items()
        if (t, n) in recorded and any(s > recorded[(t, n)] for s in a.starts)
    }
    overlaps = [_overlap(a, b, attempts) for ps in concurrent.values() for a, b in ps]
    figures = {
        "not_success": sum(1 for state, _n, _p in results.tis.values() if state != "success"),
        "duplicate_completions": len(twice) - len(as_host_died),
        "concurrent_attempts": len(concurrent),
        "success_without_end": len(success_no_end),
        "leaked_processes": leaked,
        "pool_oversubscribed": max(0, peak - pool_slots) if pooled else 0,
        "dask_keys_held": max(held[0], 0),
        "datasets_held": max(held[1], 0),
        "scheduler_exits": scheduler_exits,
        "hung": hung,
    }
    reasons = Counter(_reason_kind(extra) for extra in failed_tries.values())
    info = {
        "run_state": results.run_state,
        "states": dict(Counter(state or "none" for state, _n, _p in results.tis.values())),
        "tries": sum(n for _s, n, _p in results.tis.values()),
        "ledger_starts": sum(len(a.starts) for a in attempts.values()),
        "extra_completions": sum(c - 1 for c in ends_by_try.values() if c > 1),
        "completed_as_host_died": len(as_host_died),
        "reruns_after_recorded_success": len(reruns),
        "longest_overlap_s": round(max(overlaps, default=0.0), 3),
        "failed_tries": len(failed_tries),
        "failed_tries_whose_command_ended": sum(1 for k in failed_tries if ends_by_try[k]),
        "failure_reasons": dict(reasons.most_common(6)),
        "adopted": sum(1 for event, *_ in results.logs if event == "adopted"),
        "orphan_resets": sum(1 for event, *_ in results.logs if event == "orphan_reset"),
        "events_ignored": sum(1 for event, *_ in results.logs if event == "event_ignored"),
        "pool_peak": peak if pooled else None,
        "examples": _examples(ends_by_try, concurrent, success_no_end, attempts),
    }
    return figures, info


def _overlap(a: AttemptKey, b: AttemptKey, attempts: dict[AttemptKey, Attempt]) -> float:
    (s1, e1), (s2, e2) = attempts[a].interval(), attempts[b].interval()
    return min(e1, e2) - max(s1, s2)


def _reason_kind(extra: str | None) -> str:
    """A failure reason without its variable parts (hosts, tries, delays)."""
    text = (extra or "").split(" on ", 1)[0].split(" (try ", 1)[0]
    return text[:80]


def _examples(
    ends_by_try: Counter[tuple[str, int]],
    concurrent: dict[str, list[tuple[AttemptKey, AttemptKey]]],
    success_no_end: list[str],
    attempts: dict[AttemptKey, Attempt],
) -> dict[str, list[str]]:
    dup = [f"{t} try {n}: {c} ends" for (t, n), c in sorted(ends_by_try.items()) if c > 1]
    both = [
        f"{a[0]}: try {a[1]} pid {a[2]} & try {b[1]} pid {b[2]} "
        f"for {_overlap(a, b, attempts) * 1000:.0f} ms"
        for pairs in concurrent.values()
        for a, b in pairs[:1]
    ]
    return {
        k: v[:5]
        for k, v in (("duplicates", dup), ("concurrent", both), ("no_end", success_no_end))
        if v
    }
