"""The virtualenv the Airflow 3 tests run Airflow in: ``.venv-airflow/`` (git-ignored).

apache-airflow 3.3 (with what it needs for PostgreSQL) and airdask (editable, so the
``apache_airflow_provider`` entry point is installed) in a virtualenv of its own: Airflow pins
its dependencies, and the suite's own ``.venv`` must not depend on them. Built once and
reused while its stamp (the pins and a digest of the package metadata) matches; a build takes about
two minutes. ``python tests/airflow_venv.py`` builds it by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-airflow"
PINS = ("apache-airflow[postgres]==3.3.2", "psycopg2-binary>=2.9", "asyncpg>=0.29")
BUILD_TIMEOUT = 1200.0


class VenvError(RuntimeError):
    """The Airflow virtualenv could not be built; the message says at which step."""


def stamp() -> str:
    """The pins and a digest of the package metadata (pyproject.toml before its [tool.*]
    tables: dependencies, extras, entry points), which is what an install depends on."""
    text = (REPO / "pyproject.toml").read_text()
    metadata = text.split("\n[tool.", 1)[0]
    digest = hashlib.sha256(metadata.encode()).hexdigest()[:16]
    return "\n".join([*PINS, f"pyproject {digest}", f"python {sys.version_info[:2]}"]) + "\n"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """Build (or reuse) the virtualenv; return its ``bin`` folder. Idempotent and safe to
    call from several processes at once (a lock file serialises builds)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    stamp_file = VENV / ".airdask-stamp"
    with open(REPO / ".venv-airflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp_file.exists() and stamp_file.read_text() == stamp() and python().exists():
            return VENV / "bin"
        stamp_file.unlink(missing_ok=True)
        steps = [
            [sys.executable, "-m", "venv", str(VENV)],
            [str(python()), "-m", "pip", "install", "-q", "--upgrade", "pip"],
            [str(python()), "-m", "pip", "install", "-q", *PINS, "-e", str(REPO)],
        ]
        for step in steps:
            try:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
                )
            except subprocess.TimeoutExpired:
                raise VenvError(f"{' '.join(step[:4])}... took over {BUILD_TIMEOUT:g}s") from None
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                raise VenvError(f"{' '.join(step[:4])}... failed: " + " | ".join(tail))
        stamp_file.write_text(stamp())
    return VENV / "bin"


if __name__ == "__main__":
    print(ensure_venv())
