from __future__ import annotations

import itertools

import pytest

import airdask
from airdask.state import (
    FINISHED_STATES,
    TRANSITIONS,
    InvalidTransition,
    TaskInstanceKey,
    TaskInstanceState,
    can_transition,
    check_transition,
    coerce_state,
)

S = TaskInstanceState
ALL: list[TaskInstanceState | None] = [None, *TaskInstanceState]


def test_reexported_from_package() -> None:
    assert airdask.TaskInstanceKey is TaskInstanceKey
    assert airdask.TaskInstanceState is TaskInstanceState


def test_state_values_are_airflows() -> None:
    assert {s.value for s in TaskInstanceState} == {
        "scheduled", "queued", "running", "success", "failed", "up_for_retry",
        "up_for_reschedule", "upstream_failed", "skipped", "removed", "restarting", "deferred",
    }  # fmt: skip
    assert S.QUEUED == "queued" and str(S.QUEUED) == "queued"


def test_key_defaults_and_helpers() -> None:
    key = TaskInstanceKey("d", "t", "r")
    assert key.try_number == 1 and key.map_index == -1
    assert key.primary == ("d", "t", "r", -1)
    assert key.with_try_number(3) == TaskInstanceKey("d", "t", "r", 3, -1)
    assert key != key.with_try_number(2)
    assert "d.t" in str(key) and "try 1" in str(key)
    assert "[4]" in str(TaskInstanceKey("d", "t", "r", 1, 4))


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(ALL)
    for targets in TRANSITIONS.values():
        assert targets <= set(ALL)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ALL, ALL)))
def test_transition_table_exhaustively(
    old: TaskInstanceState | None, new: TaskInstanceState | None
) -> None:
    allowed = old == new or new in TRANSITIONS[old]
    assert can_transition(old, new) is allowed
    if allowed:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition) as err:
            check_transition(old, new)
        assert (old or "none") in str(err.value) and (new or "none") in str(err.value)


def test_finished_states_only_clear_or_remove() -> None:
    for state in FINISHED_STATES - {S.UPSTREAM_FAILED, S.REMOVED}:
        assert TRANSITIONS[state] == {None, S.REMOVED}
    assert TRANSITIONS[S.REMOVED] == {None}
    assert S.SUCCESS in FINISHED_STATES and S.RUNNING not in FINISHED_STATES


def test_the_scheduler_paths_are_allowed() -> None:
    path = [None, S.SCHEDULED, S.QUEUED, S.RUNNING, S.UP_FOR_RETRY, S.SCHEDULED, S.QUEUED]
    path += [S.RUNNING, S.SUCCESS]
    for old, new in itertools.pairwise(path):
        check_transition(old, new)
    check_transition(S.QUEUED, S.SUCCESS)  # an executor may report before "running"
    check_transition(S.QUEUED, S.SCHEDULED)  # stuck in queued -> rescheduled
    with pytest.raises(InvalidTransition):
        check_transition(S.SUCCESS, S.RUNNING)


def test_coerce_state() -> None:
    assert coerce_state("queued") is S.QUEUED
    assert coerce_state(None) is None and coerce_state("none") is None
    with pytest.raises(ValueError, match="unknown task instance state 'bogus'"):
        coerce_state("bogus")
