"""The chaos suite, short (``benchmarks/chaos``; ``make chaos`` runs it at full size).

Each scenario runs a DAG of ledger-writing commands on its own external Dask cluster with
real ``airdask scheduler`` processes under faults, and asserts that every figure is 0 (the
figures are defined in ``benchmarks/chaos/__init__.py``).

The fault times come from a seed (``CHAOS_SEED``, random by default); a failing scenario's
JSON line, with its seed, is in the assertion message.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from chaos.figures import Sampler, compute, merge_samples, read_ledger
from chaos.home import SCRIPT, Results
from chaos.procs import Processes, kill_pids, live_attempts, live_commands, settle
from chaos.run import run_scenario
from chaos.scenarios import FULL, SHORT

from proc_support import wait_for

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**31))


def _case(name: str) -> object:
    marks = [pytest.mark.postgres] if SHORT[name].needs_postgres else []
    return pytest.param(name, marks=marks, id=name)


CASES = [_case(name) for name in SHORT]


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Every process a scenario starts; whatever is left is SIGKILLed by process group."""
    started = Processes()
    try:
        yield started
    finally:
        started.kill_all()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", CASES)
def test_chaos_scenario(name: str, procs: Processes, tmp_path: Path) -> None:
    line = run_scenario(SHORT[name], seed=SEED, procs=procs, folder=tmp_path, size="short")
    print(json.dumps(line))
    bad = {figure: value for figure, value in line["figures"].items() if value}
    assert not bad, f"{name}: {bad} (seed {SEED}); {json.dumps(line)}"


def test_the_short_suite_is_the_full_one_smaller() -> None:
    assert {n for n in FULL if n != "mixed_soak"} == set(SHORT)
    for name, short in SHORT.items():
        assert short.tasks <= FULL[name].tasks
        assert {f.kind for f in short.faults} == {f.kind for f in FULL[name].faults}


# ---- the figures themselves, on made-up ledgers (fast) -------------------------------


TIs = dict[str, tuple[str | None, int, str]]


def _figures(
    ledger: Path, text: str, tis: TIs, logs: list[tuple[str, str, int, str, float]] | None = None
) -> tuple[dict[str, int], dict[str, object], int]:
    ledger.write_text(text)
    attempts, bad = read_ledger(ledger)
    figures, info = _compute(tis, attempts, logs)
    return figures, info, bad


def _compute(
    tis: TIs,
    attempts: dict,
    logs: list | None = None,  # type: ignore[type-arg]
    host_deaths: tuple[float, ...] = (),
) -> tuple[dict[str, int], dict[str, object]]:
    results = Results("success", dict(tis), list(logs or []))
    return compute(
        results, attempts, pool_slots=2, leaked=0, held=(0, 0), scheduler_exits=0, hung=0,
        host_deaths=host_deaths,
    )  # fmt: skip


def test_figures_of_a_clean_ledger_are_zero(tmp_path: Path) -> None:
    text = "a 1 10 start 1.0\na 1 10 end 2.0\nb 1 11 start 2.0\nb 1 11 end 3.0\ngarbage\n"
    tis = {"a": ("success", 1, "default_pool"), "b": ("success", 1, "default_pool")}
    figures, info, bad = _figures(tmp_path / "ledger", text, tis)
    assert set(figures.values()) == {0} and bad == 1
    assert info["ledger_starts"] == 2


def test_figures_count_each_promise_broken(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "a 1 10 start 1.0", "a 1 10 end 2.0",  # a try 1 completed...
            "a 1 12 start 5.0", "a 1 12 end 6.0",  # ...and again, after its success
            "b 1 20 start 1.0",  # b try 1 never ended, still alive when try 2 started
            "b 2 21 start 1.5", "b 2 21 end 3.0", "b 1 20 end 3.5",
            "c 1 30 start 1.0",  # c recorded success on try 1, which never ended
            "p1 1 40 start 1.0", "p1 1 40 end 4.0",  # three pool tasks at once (slots 2)
            "p2 1 41 start 2.0", "p2 1 41 end 4.0",
            "p3 1 42 start 3.0", "p3 1 42 end 4.0",
            "p4 1 43 start 4.0", "p4 1 43 end 5.0",  # starts as the others end: no overlap
        ]
    )  # fmt: skip
    tis = {t: ("success", 1, "chaos_pool" if t[0] == "p" else "default_pool") for t in "abc"}
    tis.update({t: ("success", 1, "chaos_pool") for t in ("p1", "p2", "p3", "p4")})
    tis["b"] = ("success", 2, "default_pool")
    tis["d"] = ("up_for_retry", 2, "default_pool")
    logs = [("success", "a", 1, "on host", 2.5)]
    figures, info, _ = _figures(tmp_path / "ledger", text, tis, logs=logs)
    assert figures["duplicate_completions"] == 1  # a try 1
    assert figures["concurrent_attempts"] == 1  # b (p1..p4 are different tasks)
    assert figures["success_without_end"] == 1  # c
    assert figures["not_success"] == 1  # d
    assert figures["pool_oversubscribed"] == 1  # 3 alive at once, 2 slots
    assert info["reruns_after_recorded_success"] == 1  # a started again at 5.0 > 2.5
    assert info["longest_overlap_s"] == 1.5  # b: try 2 lived 1.5-3.0 inside try 1


def test_a_completion_as_its_worker_died_is_told_apart(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ledger.write_text("a 1 10 start 1.0\na 1 10 end 2.0\na 1 11 start 3.0\na 1 11 end 4.0\n")
    attempts, _ = read_ledger(ledger)
    tis = {"a": ("success", 1, "default_pool")}
    plain, _ = _compute(tis, attempts, host_deaths=(1.0,))
    assert plain["duplicate_completions"] == 1  # the kill came a second before the end
    figures, info = _compute(tis, attempts, host_deaths=(1.9,))
    assert figures["duplicate_completions"] == 0 and info["completed_as_host_died"] == 1


def test_a_sighting_gives_an_attempt_without_end_a_span(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ledger.write_text("a 1 10 start 1.0\na 2 11 start 3.0\na 2 11 end 4.0\n")
    sampler = Sampler(ledger)
    attempts, _ = read_ledger(ledger)
    tis = {"a": ("success", 2, "default_pool")}
    alone, _ = _compute(tis, attempts)
    assert alone["concurrent_attempts"] == 0  # try 1 died at once, as far as the ledger says
    sampler.seen[("a", 1, 10)] = [1.2, 3.5]  # but it was seen alive until 3.5
    merge_samples(attempts, sampler)
    seen, _ = _compute(tis, attempts)
    assert seen["concurrent_attempts"] == 1


def test_live_commands_are_found_by_argv_and_environment(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    run_id = f"chaos_probe_{os.getpid()}"
    env = {**os.environ, "AIRDASK_CTX_TASK_ID": "t007", "AIRDASK_CTX_TRY_NUMBER": "2",
           "AIRDASK_CTX_RUN_ID": run_id}  # fmt: skip
    proc = subprocess.Popen(["bash", "-c", SCRIPT, str(ledger), "30"], env=env,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: len(live_commands(run_id)) == 2, timeout=30, what="bash and sleep")
        assert live_attempts(ledger) == {proc.pid: ("t007", 2)}  # the leader, not its sleep
        assert proc.pid in live_commands(run_id)
        assert ledger.read_text().split()[:4] == ["t007", "2", str(proc.pid), "start"]
    finally:
        kill_pids(live_commands(run_id))
        proc.wait(10)
    assert settle(lambda: live_commands(run_id), timeout=10) == []
