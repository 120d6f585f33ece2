"""The pure parts of the scheduler: trigger rules, readiness, retries, pools."""

from __future__ import annotations

import pytest

from airdask.dag import TRIGGER_RULES
from airdask.scheduler.pools import SlotBudget
from airdask.scheduler.rules import (
    RULES,
    Decision,
    UpstreamCounts,
    decision_state,
    evaluate,
    should_retry,
)
from airdask.state import TaskInstanceState

RUN, WAIT, SKIP, UF = Decision.RUN, Decision.WAIT, Decision.SKIP, Decision.UPSTREAM_FAILED


def up(*states: str | None) -> UpstreamCounts:
    return UpstreamCounts.of(states)


@pytest.mark.parametrize(
    ("rule", "states", "expected"),
    [
        ("all_success", ("success", "success"), RUN),
        ("all_success", ("success", None), WAIT),
        ("all_success", ("failed", None), UF),  # eager, as Airflow
        ("all_success", ("upstream_failed", "success"), UF),
        ("all_success", ("skipped", "success"), SKIP),
        ("all_success", ("running", "success"), WAIT),
        ("all_failed", ("failed", "upstream_failed"), RUN),
        ("all_failed", ("failed", None), WAIT),
        ("all_failed", ("failed", "success"), SKIP),
        ("all_done", ("failed", "skipped", "success"), RUN),
        ("all_done", ("failed", "up_for_retry"), WAIT),
        ("one_success", ("success", None), RUN),
        ("one_success", ("failed", None), WAIT),
        ("one_success", ("failed", "skipped"), UF),
        ("one_success", ("skipped", "skipped"), SKIP),
        ("one_failed", ("failed", None), RUN),
        ("one_failed", ("success", None), WAIT),
        ("one_failed", ("success", "skipped"), SKIP),
        ("one_done", ("failed", None), RUN),
        ("one_done", ("skipped", "skipped"), SKIP),
        ("none_failed", ("success", "skipped"), RUN),
        ("none_failed", ("success", None), WAIT),
        ("none_failed", ("upstream_failed", None), UF),
        ("none_failed_min_one_success", ("skipped", "skipped"), SKIP),
        ("none_failed_min_one_success", ("skipped", "success"), RUN),
        ("none_failed_min_one_success", ("failed", "success"), UF),
        ("none_skipped", ("failed", "success"), RUN),
        ("none_skipped", ("skipped", None), SKIP),
        ("always", (None, None), RUN),
    ],
)
def test_trigger_rules(rule: str, states: tuple[str | None, ...], expected: Decision) -> None:
    assert evaluate(rule, up(*states)) is expected


def test_no_upstream_runs_whatever_the_rule() -> None:
    for rule in ("all_success", "all_failed", "one_success", "one_failed", "none_skipped"):
        assert evaluate(rule, up()) is RUN


def test_every_trigger_rule_has_an_entry_in_the_table() -> None:
    assert set(RULES) == set(TRIGGER_RULES)


def test_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule 'maybe'"):
        evaluate("maybe", up("success"))


def test_counts_and_decision_states() -> None:
    counts = up("success", "failed", "upstream_failed", "skipped", "removed", None, "running")
    assert (counts.total, counts.done, counts.failures, counts.all_done) == (7, 5, 2, False)
    assert UpstreamCounts.of([TaskInstanceState.SUCCESS]).success == 1
    assert decision_state(RUN) is TaskInstanceState.SCHEDULED
    assert decision_state(SKIP) is TaskInstanceState.SKIPPED
    assert decision_state(UF) is TaskInstanceState.UPSTREAM_FAILED
    assert decision_state(WAIT) is None


def test_retry_eligibility_follows_try_number() -> None:
    # retries=1 -> max_tries=1: try 1 may retry, try 2 may not
    assert should_retry(1, 1)
    assert not should_retry(2, 1)
    assert not should_retry(1, 0)


def test_slot_budget_respects_pool_slots_and_total() -> None:
    budget = SlotBudget({"p": 3, "default_pool": 128}, total=3)
    assert budget.take("p", 2) is None
    assert "1 open slots" in (budget.take("p", 2) or "")
    assert budget.take("p", 1) is None
    assert budget.full_pools() == {"p"}
    assert "does not exist" in (budget.take("nope", 1) or "")
    assert budget.take("default_pool", 1) is None
    assert budget.exhausted
    assert "no open slots" in (budget.take("default_pool", 1) or "")
