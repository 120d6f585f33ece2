"""DoneWatcher on a real LocalCluster: every watched future is queued exactly once when it
finishes, errs or is cancelled, through the FutureState hook and through the
``add_done_callback`` fallback alike."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import pytest
from distributed import Client, Event, Future

from airdask.executors.dask.done import DoneQueue, DoneWatcher
from dask_support import local_cluster


def wait_then(name: str, value: int) -> int:
    # Setting "started" first makes the worker's client before the test cancels a key:
    # Dask broadcasts "cancelled-keys" to every client, and a client registering in the
    # same 2 ms batch gets two messages where it asserts one (distributed 2026.8).
    Event(f"{name}-started").set()
    Event(name).wait(timeout=60)
    return value


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        local_cluster(n_workers=1, threads=3) as cluster,
        Client(cluster, set_as_default=False) as c,  # type: ignore[arg-type]
    ):
        yield c


def collect(done: DoneQueue, count: int, timeout: float = 30.0) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        got = done.wait(timeout)
        assert got, f"only {names} were reported within {timeout}s"
        names.extend(got)
    return names


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hook", [True, False], ids=["hook", "callback"])
def test_each_outcome_is_reported_once(
    client: Client, hook: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    original = Future.add_done_callback

    def counting(self: Future, fn: Any) -> None:
        calls.append(self.key)
        original(self, fn)

    monkeypatch.setattr(Future, "add_done_callback", counting)
    done = DoneQueue()
    watcher = DoneWatcher(done, hook=hook)
    gate = Event(f"gate-{hook}", client=client)
    finished_early = client.submit(operator.add, 1, 2, key=f"early-{hook}", pure=False)
    finished_early.result(timeout=30)  # done before it is watched: still reported
    ok = client.submit(operator.add, 2, 3, key=f"ok-{hook}", pure=False)
    erred = client.submit(int, "not a number", key=f"erred-{hook}", pure=False)
    blocked = client.submit(wait_then, gate.name, 7, key=f"blocked-{hook}", pure=False)
    cancelled = client.submit(  # waits for a resource no worker has
        operator.add, 0, 0, key=f"cancel-{hook}", pure=False, resources={"nowhere": 1}
    )
    watched = [finished_early, ok, erred, blocked, cancelled]
    watcher.watch(client, [(f.key, f) for f in watched])

    first = collect(done, 3)
    assert sorted(first) == sorted([f"early-{hook}", f"ok-{hook}", f"erred-{hook}"])
    assert Event(f"{gate.name}-started", client=client).wait(timeout=30)
    assert blocked.status == "pending"  # not reported before it ends
    cancelled.cancel(reason="test")
    assert collect(done, 1) == [f"cancel-{hook}"]
    gate.set()
    assert collect(done, 1) == [f"blocked-{hook}"]
    assert done.wait(0.3) == []  # nothing is reported twice
    assert blocked.result(timeout=10) == 7
    assert erred.status == "error" and cancelled.status == "cancelled"
    # the hook does without Dask's per-future callbacks; the fallback uses them
    assert calls == ([] if hook else [f.key for f in watched])


def test_the_hook_fits_the_installed_dask() -> None:
    """If a Dask release changes FutureState, this fails rather than letting every future
    silently take the slower callback path."""
    assert DoneWatcher(DoneQueue()).hooked
