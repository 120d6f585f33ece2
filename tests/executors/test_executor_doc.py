"""The contract's example executor (executors/base.py) runs as written."""

from __future__ import annotations

import doctest
from pathlib import Path

import airdask.executors.base


def test_the_base_executor_docstring_example_runs(home: Path) -> None:
    result = doctest.testmod(airdask.executors.base, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10, "the example lost its doctest lines"
    assert result.failed == 0
