"""CeleryExecutor against real brokers and real ``airdask celery worker`` processes: adoption,
revoke, live logs, queue routing and withdrawn attempts, a SIGKILLed worker, a worker without
database credentials, the database result backend and ``airdask celery inspect``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airdask.config import Config
from airdask.state import TaskInstanceState
from celery_support import (
    REDIS_DB,
    PrivateRedis,
    Worker,
    broker_settings,
    celery_env,
    flush_redis,
    free_port,
    require_broker,
    start_worker,
)
from executor_support import drain, make_ti
from proc_support import pid_alive, pids_file_complete, read_pids, spawn_tree_script, wait_for

S = TaskInstanceState


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker on Redis for the tests that need nothing special of it."""
    require_broker("redis")
    flush_redis(REDIS_DB["faults"])  # queue names are fresh; this drops old results
    worker = start_worker(broker_settings("redis", REDIS_DB["faults"]),
                          tmp_path_factory.mktemp("shared"), concurrency=3)  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture
def redis_options(shared: Worker) -> dict[str, str]:
    return dict(shared.options)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def executor_for(config: Config, options: dict[str, str], parallelism: int | None = None) -> Any:
    from airdask.executors.celery.executor import CeleryExecutor

    overrides = {("celery", k): v for k, v in options.items()}
    executor = CeleryExecutor(parallelism, config=config.with_overrides(overrides))
    executor.start()
    return executor


def wait_started(executor: Any, key: Any, timeout: float = 30) -> Any:
    """Heartbeat until ``key`` is reported RUNNING; its info."""
    seen: dict[str, Any] = {}

    def started() -> bool:
        executor.heartbeat()
        entry = executor.event_buffer.get(key)
        if entry is not None and entry[0] is S.RUNNING:
            seen["info"] = entry[1]
            executor.event_buffer.pop(key)
        return "info" in seen

    wait_for(started, timeout=timeout, what=f"{key} running")
    return seen["info"]


def test_adoption_reattaches_by_celery_id_and_runs_once(
    config: Config, redis_options: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    first = executor_for(config, redis_options)
    ti = make_ti("adopted")
    first.queue_command(ti, ["bash", "-c", f"echo run >> {ledger}; sleep 1.5; echo done"])
    first.heartbeat()
    queued = first.get_event_buffer()[ti.key]
    assert queued[0] is S.QUEUED
    ti.external_executor_id = queued[1].external_executor_id
    wait_started(first, ti.key)
    del first  # the scheduler died: nothing was ended or revoked
    second = executor_for(config, redis_options)
    stranger = make_ti("never_sent")
    assert second.try_adopt_task_instances([ti, stranger]) == [stranger]
    state, info = drain(second, [ti.key])[ti.key]
    assert state is S.SUCCESS and info.external_executor_id == ti.external_executor_id
    assert ledger.read_text() == "run\n"
    _, lines = second.get_task_log(ti, 1)
    assert "done" in lines
    second.end()


def test_revoke_kills_the_process_group_and_no_event_follows(
    config: Config, redis_options: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    executor = executor_for(config, redis_options)
    pid_file = tmp_path / "pids"
    ti = make_ti("revoked")
    executor.queue_command(ti, spawn_tree_script(pid_file))
    wait_started(executor, ti.key)
    wait_for(pids_file_complete(pid_file, 2), timeout=30, what="the command's processes")
    _, live = executor.get_task_log(ti, 1)  # nothing printed: the file exists, empty
    assert live == []
    executor.revoke_task(ti=ti)
    pids = read_pids(pid_file)
    wait_for(lambda: not any(map(pid_alive, pids)), timeout=15, what="the group killed")
    assert not executor.has_task(ti)
    for _ in range(10):
        executor.heartbeat()
    assert ti.key not in executor.get_event_buffer()
    executor.end()


def test_live_log_of_a_running_attempt_comes_from_its_worker(
    config: Config, redis_options: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    executor = executor_for(config, redis_options)
    ready = tmp_path / "ready"
    ti = make_ti("live")
    executor.queue_command(ti, ["bash", "-c", f"echo line-one; touch {ready}; sleep 30"])
    wait_started(executor, ti.key)
    wait_for(ready.exists, timeout=30, what="the first line")
    messages, lines = executor.get_task_log(ti, 1)
    assert lines == ["line-one"] and "live log" in messages[0]
    executor.terminate()


def test_a_queue_nobody_consumes_stays_queued_then_is_withdrawn_for_good(
    config: Config, redis_options: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    executor = executor_for(config, redis_options)
    marker = tmp_path / "ran"
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    ti = make_ti("stuck", queue=queue)
    executor.queue_command(ti, ["touch", str(marker)], queue=queue)
    for _ in range(20):
        executor.heartbeat()
    events = executor.get_event_buffer()
    assert [state for state, _ in events.values()] == [S.QUEUED]
    ti.external_executor_id = events[ti.key][1].external_executor_id
    lines = executor.cleanup_stuck_queued_tasks([ti])
    assert queue in lines[0] and not executor.has_task(ti)
    # A worker that comes up on that queue later never heard the revoke broadcast: the
    # mark in the result backend keeps it from running the attempt.
    workers.append(start_worker(redis_options, tmp_path / "late", queues=[queue]))
    result = executor.app.AsyncResult(ti.external_executor_id)
    wait_for(lambda: result.state == "SUCCESS", timeout=30, what="the late worker's answer")
    assert result.result["kind"] == "killed" and "withdrawn" in result.result["reason"]
    assert not marker.exists()
    executor.end()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rabbitmq", "redis"])
def test_a_sigkilled_worker_leaves_no_orphan_and_the_attempt_is_redelivered(
    config: Config, workers: list[Worker], tmp_path: Path, kind: str
) -> None:
    require_broker(kind)
    require_broker("redis")
    # Redis redelivers after the visibility timeout (its restore pass runs every 10 s).
    options = {**broker_settings(kind, REDIS_DB["faults"]), "visibility_timeout": "2"}
    first = start_worker(options, tmp_path / "w1", concurrency=1)
    workers.append(first)
    executor = executor_for(config, options)
    pid_file, ledger = tmp_path / "pids", tmp_path / "ledger"
    script = (
        f'echo "start $$" >> {ledger}; '
        f"if [ ! -e {pid_file} ]; then sleep 60 & echo $! >> {pid_file}; echo $$ >> {pid_file};"
        f' wait; fi; echo "end $$" >> {ledger}'
    )
    ti = make_ti("survivor")
    executor.queue_command(ti, ["bash", "-c", script])
    wait_started(executor, ti.key)
    wait_for(pids_file_complete(pid_file, 2), timeout=30, what="the first copy's processes")
    pids = read_pids(pid_file)
    os.kill(first.process.pid, signal.SIGKILL)  # the worker's main process, mid-task
    wait_for(lambda: not any(map(pid_alive, pids)), timeout=10, what="the first copy dead")
    workers.append(start_worker(options, tmp_path / "w2", concurrency=1))
    state, info = drain(executor, [ti.key], timeout=60)[ti.key]
    assert state is S.SUCCESS, info
    starts = [line for line in ledger.read_text().splitlines() if line.startswith("start")]
    ends = [line for line in ledger.read_text().splitlines() if line.startswith("end")]
    assert len(starts) == 2 and len(ends) == 1
    executor.end()
    for worker in workers:  # the broker's password (RabbitMQ's guest) is masked by both
        assert ":guest@" not in worker.output()


def test_a_worker_needs_no_database_credentials(
    config: Config, workers: list[Worker], tmp_path: Path
) -> None:
    require_broker("redis")
    options = broker_settings("redis", REDIS_DB["faults"])
    del options["result_backend"]  # the default: the broker itself
    dead_db = "postgresql+psycopg://nobody:deadpw77@127.0.0.1:1/nothing"
    env = {"AIRDASK__DATABASE__SQL_ALCHEMY_CONN": dead_db}
    workers.append(start_worker(options, tmp_path / "w", env_extra=env))
    executor = executor_for(config, options)
    assert executor.settings.result_backend == options["broker_url"]
    ti = make_ti("no_db")
    executor.queue_command(ti, ["bash", "-c", "echo fine"])
    assert drain(executor, [ti.key])[ti.key][0] is S.SUCCESS
    assert "deadpw77" not in workers[0].output()
    executor.end()


@pytest.mark.postgres
def test_the_database_result_backend_one_query_per_sync(
    config: Config, workers: list[Worker], tmp_path: Path, pg_url: str
) -> None:
    require_broker("redis")
    options = {**broker_settings("redis", REDIS_DB["faults"]), "result_backend": "db+" + pg_url}
    workers.append(start_worker(options, tmp_path / "w", concurrency=2))
    executor = executor_for(config, options)
    tis = [make_ti(f"t{i}") for i in range(6)]
    for i, ti in enumerate(tis):
        executor.queue_command(ti, ["bash", "-c", f"echo t{i}; exit {i % 2}"])
    events = drain(executor, [ti.key for ti in tis])
    assert [events[ti.key][0] for ti in tis] == [S.SUCCESS, S.FAILED] * 3
    assert str(events[tis[1].key][1]) == "exit code 1"
    assert executor._fetcher.round_trips == executor.sync_count  # one query per sync
    assert executor.get_task_log(tis[4], 1)[1] == ["t4"]
    executor.end()


def test_celery_inspect_lists_the_workers_and_what_they_run(
    config: Config, shared: Worker, redis_options: dict[str, str], tmp_path: Path
) -> None:
    worker = shared
    executor = executor_for(config, redis_options)
    ti = make_ti("inspected")
    executor.queue_command(ti, ["sleep", "30"])
    wait_started(executor, ti.key)
    home = tmp_path / "cli-home"
    home.mkdir()
    env = {**celery_env(redis_options, home), "COLUMNS": "250"}
    result = subprocess.run([sys.executable, "-m", "airdask.cli", "celery", "inspect"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert worker.hostname in result.stdout and redis_options["default_queue"] in result.stdout
    assert "contract.inspected" in result.stdout and " 3 " in result.stdout
    executor.terminate()


@pytest.mark.slow
def test_a_lost_broker_keeps_the_loop_alive_and_the_attempt_is_outcome_unknown(
    config: Config, workers: list[Worker], tmp_path: Path
) -> None:
    require_broker("redis")
    server = PrivateRedis(free_port())
    server.start()
    try:
        options = {**broker_settings("redis", 0), "broker_url": server.url,
                   "result_backend": server.url, "lost_after": "2",
                   "operation_timeout": "1"}  # fmt: skip
        workers.append(start_worker(options, tmp_path / "w"))
        executor = executor_for(config, options, parallelism=4)
        pid_file = tmp_path / "pids"
        ti = make_ti("cut_off")
        executor.queue_command(ti, spawn_tree_script(pid_file))
        wait_started(executor, ti.key)
        wait_for(pids_file_complete(pid_file, 2), timeout=30, what="the command's processes")
        server.kill()
        waiting = make_ti("waiting")
        executor.queue_command(waiting, ["true"])
        state, info = drain(executor, [ti.key], timeout=30)[ti.key]  # heartbeats go on
        assert state is S.FAILED and info.outcome_unknown, info
        assert "unreachable" in str(info)
        assert executor.slots_available == 0 and executor.has_task(waiting)
        # The worker lost its broker too: it cancelled the attempt (no second copy later).
        pids = read_pids(pid_file)
        wait_for(lambda: not any(map(pid_alive, pids)), timeout=30, what="the attempt killed")
        # Celery's Redis transport cannot recover from the loss (an unrecoverable error):
        # airdask's worker then stops cold, so its attempt died with it (above).
        assert workers[0].process.wait(30) != 0
        server.start()  # an empty Redis again, and a worker (as a supervisor would restart)
        workers.append(start_worker(options, tmp_path / "w2"))
        assert drain(executor, [waiting.key], timeout=60)[waiting.key][0] is S.SUCCESS
        assert executor.slots_available == 4
        executor.end()
    finally:
        server.kill()
