"""What ``pip install airdask`` gives a user: ``python -m build`` makes the sdist and, from it,
the wheel; the wheel is installed (not editable) into a fresh virtualenv, and the ``airdask``
command is run from there, far from the source tree.

One virtualenv serves every check. Its dependencies are pinned to the versions of the
environment running this suite, which pip already has: nothing new is downloaded, and the
installed copy is tested against what the rest of the suite tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import airdask
from airdask.logs.packs import packed_logs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "airdask"


@dataclass(frozen=True)
class Installed:
    root: Path
    wheel: Path
    sdist: Path
    venv: Path

    def run(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``argv[0]`` from the virtualenv's bin/, cwd outside the repository, AIRDASK_* of
        the caller's shell and anything pointing at the source tree removed."""
        full = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AIRDASK") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        }
        bin_dir = self.venv / "bin"
        full.update(
            PATH=f"{bin_dir}{os.pathsep}{full.get('PATH', '')}",
            AIRDASK_HOME=str(self.root / "home"),
            COLUMNS="200",
            **(env or {}),
        )
        return subprocess.run(
            [str(bin_dir / argv[0]), *argv[1:]],
            cwd=self.root,
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _check(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, f"{argv[2:4]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def _pins() -> str:
    """This environment's distributions (airdask aside) as pip constraints."""
    names: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "airdask":
            names.setdefault(name.lower(), f"{name}=={dist.version}")
    return "\n".join(sorted(names.values())) + "\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    dist, venv, pins = root / "dist", root / "venv", root / "pins.txt"
    _check([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)])
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    # No pip inside (ensurepip costs ~15 s): this suite's pip installs into it.
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    pins.write_text(_pins())
    into = ["--python", str(venv / "bin" / "python")]
    # --no-compile: modules compile when first imported, not every file of every dependency.
    options = ["--quiet", "--no-compile", "--constraint", str(pins)]
    _check([sys.executable, "-m", "pip", *into, "install", *options, str(wheel)])
    (root / "home").mkdir()
    return Installed(root=root, wheel=wheel, sdist=sdist, venv=venv)


@pytest.mark.timeout(300)
def test_the_wheel_and_sdist_hold_the_package_and_its_licence(installed: Installed) -> None:
    version = airdask.__version__
    assert installed.wheel.name == f"airdask-{version}-py3-none-any.whl"
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    shipped = {name for name in names if name.startswith("airdask/")}
    source = {
        f"airdask/{path.relative_to(PACKAGE).as_posix()}"
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped == source  # every module and data file (py.typed), nothing else
    assert f"airdask-{version}.dist-info/licenses/LICENSE" in names
    with tarfile.open(installed.sdist) as sdist:
        members = {name.partition("/")[2] for name in sdist.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "src/airdask/py.typed"} <= members
    assert not any(name.startswith("tests/") for name in members)


@pytest.mark.timeout(300)
def test_the_installed_command_reports_its_version_and_inits_the_db(installed: Installed) -> None:
    version = installed.run("airdask", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"airdask, version {airdask.__version__}"
    where = installed.run("python", "-c", "import airdask; print(airdask.__file__)")
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(installed.venv), f"airdask imported from {package}"
    assert (package / "py.typed").is_file()
    init = installed.run("airdask", "db", "init")
    assert init.returncode == 0, init.stdout + init.stderr
    assert (installed.root / "home" / "airdask.db").is_file()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.timeout(300)
def test_a_one_task_run_on_the_embedded_cluster_serves_the_airdask_page(
    installed: Installed,
) -> None:
    """The task itself reads the airdask page of the dashboard it runs under: the page's
    preload, Bokeh app and Dask template are all the installed copy's."""
    port = _free_port()
    seen = installed.root / "seen.json"
    dag_file = installed.root / "packaged.py"
    dag_file.write_text(
        textwrap.dedent(
            f"""
            from airdask.dag import DAG, PythonTask

            def look(url, out):
                import json, urllib.request
                import airdask
                with urllib.request.urlopen(url, timeout=30) as page:
                    body = page.read().decode()
                    status = page.status
                with open(out, "w") as fh:
                    json.dump({{"status": status, "bokeh": "data-root-id=" in body,
                               "airdask": airdask.__file__}}, fh)
                print("page read")

            with DAG("packaged") as dag:
                PythonTask("look", look, op_args=["http://127.0.0.1:{port}/airdask", {str(seen)!r}])
            """
        )
    )
    result = installed.run(
        "airdask",
        "run",
        str(dag_file),
        env={
            "AIRDASK__DASK__DASHBOARD_ADDRESS": f"127.0.0.1:{port}",
            "AIRDASK__DASK__N_WORKERS": "1",
            "AIRDASK__DASK__THREADS_PER_WORKER": "1",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on DaskExecutor" in result.stdout
    found = json.loads(seen.read_text())
    assert found["status"] == 200 and found["bokeh"], found
    assert Path(found["airdask"]).is_relative_to(installed.venv), found
    [run_logs] = [p.parent for p in (installed.root / "home" / "logs").rglob("attempts.log")]
    logs = packed_logs(str(run_logs))
    assert len(logs) == 1 and "page read" in next(iter(logs.values()))
