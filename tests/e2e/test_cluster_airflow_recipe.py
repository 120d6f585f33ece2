"""The Airflow 3 recipe (cluster/airflow/) cannot rot silently: every ``airflow ...`` command
goes through Airflow's real CLI parser and every ``AIRFLOW__*`` variable must be an option
Airflow (or airdask's provider) describes, both checked by the Airflow of ``.venv-airflow``;
the ``dask ...`` commands go through Dask's real CLIs; addresses, ports, the shared secret,
pools, resources and volumes must agree across services. Parsed, not run (no Docker here).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from importlib.metadata import version
from pathlib import Path
from typing import Any

import distributed
import pytest
import yaml
from distributed.cli import dask_scheduler, dask_worker

from airflow_venv import VenvError, ensure_venv
from conftest import skip_or_fail

# The first test to need .venv-airflow may build it (about two minutes).
pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "cluster" / "airflow"
IMAGE = f"airdask/airflow:{version('airdask')}"
AIRFLOW_SERVICES = ("airflow-init", "airflow-api-server", "airflow-dag-processor",
                    "airflow-scheduler")  # fmt: skip
WORKERS = ("dask-worker", "dask-worker-gpu")

CHECKER = textwrap.dedent(
    """
    import json, shlex, sys
    from airflow.cli.cli_parser import get_parser
    from airflow.configuration import conf

    request = json.load(sys.stdin)
    problems = []
    for argv in request["commands"]:
        try:
            get_parser().parse_args(argv[1:])
        except SystemExit as exc:
            problems.append(f"airflow cannot parse {argv}: exit {exc.code}")
    described = conf.configuration_description
    for name in request["variables"]:
        section, key = name[len("AIRFLOW__"):].lower().split("__", 1)
        if key not in described.get(section, {}).get("options", {}):
            problems.append(f"{name}: no option [{section}] {key}")
    print(json.dumps(problems))
    """
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((RECIPE / "docker-compose.yml").read_text())
    return data


def airflow_commands(argv: list[str]) -> list[list[str]]:
    if argv[:2] == ["sh", "-c"]:
        import shlex

        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


def check_with_airflow(commands: list[list[str]], variables: list[str]) -> list[str]:
    try:
        bin_dir = ensure_venv()
    except VenvError as exc:
        skip_or_fail(f"cannot build the Airflow virtualenv: {exc}")
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", CHECKER],
        input=json.dumps({"commands": commands, "variables": variables}),
        capture_output=True, text=True, timeout=180, check=False,
        env={"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(REPO / ".venv-airflow" / "home")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_the_checker_catches_rot() -> None:
    problems = check_with_airflow(
        [["airflow", "api-server", "--prot", "8080"], ["airflow", "pools", "set", "gpu", "1"]],
        ["AIRFLOW__DASK__CLUSTER_ADRESS", "AIRFLOW__CORE__EXECUTOR"],
    )
    assert len(problems) == 3 and "CLUSTER_ADRESS" in problems[2]


@pytest.mark.slow
def test_airflow_commands_and_variables_are_real(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = [cmd for name in AIRFLOW_SERVICES
                for cmd in airflow_commands(services[name]["command"])]  # fmt: skip
    assert all(cmd[0] == "airflow" for cmd in commands)
    variables = sorted({var for svc in services.values() for var in svc.get("environment", {})})
    variables = [var for var in variables if var.startswith("AIRFLOW__")]
    assert "AIRFLOW__DASK__CLUSTER_ADDRESS" in variables
    assert check_with_airflow(commands, variables) == []


def test_services_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        if name != "postgres":
            assert svc["image"] == IMAGE, name
            assert (RECIPE / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
    sched = dask_scheduler.main.make_context(
        "dask scheduler", services["dask-scheduler"]["command"][2:]
    )
    port = int(sched.params["port"])
    assert f"{port}:{port}" in services["dask-scheduler"]["ports"]
    address = f"tcp://dask-scheduler:{port}"
    resources: dict[str, str] = {}
    for name in WORKERS:
        ctx = dask_worker.main.make_context("dask worker", services[name]["command"][2:])
        assert ctx.params["scheduler"] == address, name
        for item in (ctx.params["resources"] or "").split(","):
            if item:
                key, amount = item.split("=")
                resources[key] = amount

    api = services["airflow-api-server"]
    api_port = int(api["command"][api["command"].index("--port") + 1])
    env = {name: services[name].get("environment", {}) for name in services}
    for name in (*AIRFLOW_SERVICES, *WORKERS):
        assert env[name]["AIRFLOW__CORE__EXECUTOR"] == "airdask.airflow.DaskExecutor", name
        assert env[name]["AIRFLOW__DASK__CLUSTER_ADDRESS"] == address, name
        assert env[name]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            f"http://airflow-api-server:{api_port}/execution/"
        )
    # The scheduler signs the tokens the API server checks.
    secrets = {env[name]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(secrets) == 1
    # Workers: no database credentials, the DAG files and logs where Airflow expects them.
    for name in WORKERS:
        assert not any("SQL_ALCHEMY" in var for var in env[name]), name
    dags = env["airflow-scheduler"]["AIRFLOW__CORE__DAGS_FOLDER"]
    logs = env["airflow-scheduler"]["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]
    for name in (*AIRFLOW_SERVICES[1:], *WORKERS):
        targets = [volume.split(":")[1] for volume in services[name]["volumes"]]
        assert dags in targets and logs in targets, name
    # The pool airflow-init creates is the resource a worker offers.
    init = services["airflow-init"]["command"][2]
    pools = dict(re.findall(r"airflow pools set (\S+) (\d+)", init))
    assert pools and set(pools) <= set(resources)
    dag = (RECIPE / "dags" / "hello_airflow_dask.py").read_text()
    assert all(f'pool="{pool}"' in dag for pool in pools)


def test_the_image_installs_the_tested_airflow_and_dask() -> None:
    text = (RECIPE / "Dockerfile").read_text()
    pins = dict(re.findall(r'"(dask|distributed)==([^"]+)"', text))
    assert pins == {"dask": distributed.__version__, "distributed": distributed.__version__}
    from airflow_venv import PINS

    assert PINS[0] in text and '".[airflow]"' in text
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for name in source.split():
            assert (REPO / name).exists(), f"the Dockerfile copies {name}, not in the repo"
    assert f"-t {IMAGE}" in text
