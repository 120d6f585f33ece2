"""Every notebook runs top to bottom in a real kernel (nbclient), each in a fresh
AIRDASK_HOME, and is stored with its outputs stripped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "python3"
#: Text each executed notebook must show (in its printed or displayed outputs): what the
#: notebook is about actually happened, not merely "no cell raised".
EXPECTED = {
    "01-quickstart": [
        "Dask dashboard: http://",  # the dashboard link
        "DAG run quickstart",  # the run's rich HTML table
        "part 2: transformed 2000 rows",  # one task's log
        "[airdask] command: bash -c 'echo extracting quickstart for ",  # a rendered template
        "total: 6997000",  # results passed on (the conf overrode the label param)
    ],
    "02-pools-and-resources": ["gpu pool respected", "gpu-worker"],
    "03-write-your-own-executor": ["exit code 3: oops", "<b>InlineExecutor</b>"],
}


@pytest.fixture(scope="session")
def kernel() -> str:
    """The python3 kernel of this interpreter, installed into its prefix when missing."""
    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return KERNEL


def test_the_three_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01-quickstart.ipynb",
        "02-pools-and-resources.ipynb",
        "03-write-your-own-executor.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(
    path: Path, kernel: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=180,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    elapsed = time.monotonic() - started
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    shown = "\n".join(
        str(out.get("text", "")) + "".join(str(v) for v in out.get("data", {}).values())
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    missing = [text for text in EXPECTED[path.stem] if text not in shown]
    assert not missing, f"{path.name} did not show {missing}"
    assert elapsed < 180, f"{path.name} took {elapsed:.0f} s"
    # The notebook used the test's AIRDASK_HOME, not the reader's.
    assert (home / "airdask.db").exists()
