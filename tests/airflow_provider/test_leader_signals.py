"""The fork server's leader (``worker_script.lead``) never loses its stop.

A SIGTERM that reached the leader while it forked its workload was handled inside an at-fork
callback (logging's ``_releaseLock``), where Python swallows the handler's exception: the
leader then ignored SIGTERM and waited for its workload for ever, and the fork server with it.
The callback below sends the SIGTERM at exactly that moment. Runs without Airflow: the
workload fails at once, so a lost stop shows as the workload's exit code instead of 143."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LEADER = textwrap.dedent(
    """
    import os, signal, sys
    from airdask.airflow import worker_script

    os.register_at_fork(after_in_parent=lambda: os.kill(os.getpid(), signal.SIGTERM))
    sys.exit(worker_script.lead(sys.argv[1], "http://127.0.0.1:9/"))
    """
)


@pytest.mark.timeout(60)
def test_a_stop_that_arrives_while_the_leader_forks_still_stops_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LEADER, str(tmp_path / "no-workload.json")],
        capture_output=True, text=True, timeout=45, check=False,
    )  # fmt: skip
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    assert "Exception ignored" not in done.stderr
