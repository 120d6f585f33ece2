"""The deployment recipes cannot rot silently: every command in them is parsed by the real
click commands (``airdask ...``, and ``dask scheduler``/``dask worker`` for what ``airdask dask
worker`` passes through), every ``AIRDASK__*`` variable is a real config key with a valid
value, and images, ports, addresses, pools and resources agree across files.

No Docker, Kubernetes or SLURM here: the files are parsed, not run. cluster/local is run for
real in test_cluster_local.py.
"""

from __future__ import annotations

import importlib.util
import py_compile
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import distributed
import pytest
import yaml
from distributed.cli import dask_scheduler, dask_worker
from sqlalchemy.engine import make_url

from airdask.config import load_config
from airdask.dagbag import DagBag
from airdask.executors.dask.cli import parse_resources

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
IMAGE = f"airdask/airdask:{version('airdask')}"


# ---- checking one command line against the real CLIs -----------------------------------


def _airdask_cli() -> click.Group:
    from airdask.cli import _add_optional_groups, cli

    _add_optional_groups()
    return cli


def check_command(argv: list[str]) -> dict[str, Any]:
    """Parse ``argv`` with the command it names; return facts the recipes must agree on
    (``address``, ``port``, ``dashboard_port``, ``resources``, ``preload``, ``pools``)."""
    if argv[:2] == ["sh", "-c"]:
        facts: dict[str, Any] = {"pools": {}}
        for part in argv[2].split("&&"):
            facts["pools"].update(check_command(shlex.split(part)).get("pools", {}))
        return facts
    if argv[:2] == ["dask", "scheduler"]:
        ctx = dask_scheduler.main.make_context("dask scheduler", list(argv[2:]))
        dashboard = str(ctx.params["dashboard_address"] or "")
        return {
            "port": int(ctx.params["port"]),
            "dashboard_port": int(dashboard.rsplit(":", 1)[-1]) if dashboard else None,
            "preload": list(ctx.params["preload"]),
        }
    if argv[:2] == ["dask", "worker"]:
        ctx = dask_worker.main.make_context("dask worker", list(argv[2:]))
        return {"address": ctx.params["scheduler"]}
    assert argv[0] == "airdask", f"unexpected program in {argv}"
    command: click.Command = _airdask_cli()
    args = list(argv[1:])
    path = ["airdask"]
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"no command `{' '.join([*path, name])}` (in {argv})"
        command, path = sub, [*path, name]
    ctx = command.make_context(" ".join(path), args)
    if path == ["airdask", "dask", "worker"]:
        # What it does not know goes to `dask worker`: that must accept it.
        dask_worker.main.make_context("dask worker", [ctx.params["address"], *ctx.args])
        return {
            "address": ctx.params["address"],
            "resources": parse_resources(ctx.params["resources"]),
        }
    if path == ["airdask", "pools", "set"]:
        return {"pools": {ctx.params["name"]: ctx.params["slots"]}}
    return {}


def check_env(env: dict[str, str], tmp_path: Path) -> None:
    """Every AIRDASK__ variable is a known key with a value of the right type."""
    airdask_vars = {k: v for k, v in env.items() if k.startswith("AIRDASK__")}
    assert airdask_vars
    load_config({**airdask_vars, "AIRDASK_HOME": str(tmp_path)}, path=tmp_path / "none.cfg")


def test_check_command_catches_rot() -> None:
    """The checker itself fails on the mistakes it is there to catch."""
    with pytest.raises(click.NoSuchOption):
        check_command(["airdask", "dask", "worker", "tcp://s:8786", "--nthreds", "2"])
    with pytest.raises(AssertionError, match="no command `airdask dask wroker`"):
        check_command(["airdask", "dask", "wroker", "tcp://s:8786"])
    with pytest.raises(click.BadParameter):
        check_command(["airdask", "dask", "worker", "tcp://s:8786", "--resources", "gpu"])
    with pytest.raises(click.NoSuchOption):
        check_command(["dask", "scheduler", "--prot", "8786"])
    with pytest.raises(Exception, match="unknown config key"):
        check_env({"AIRDASK__DASK__CLUSTER_ADRESS": "tcp://s:8786"}, Path("/nonexistent"))


# ---- the image ------------------------------------------------------------------------


def test_dockerfile_installs_this_airdask_and_the_tested_dask() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    pins = dict(re.findall(r'"(dask|distributed)==([^"]+)"', text))
    assert pins == {"dask": distributed.__version__, "distributed": distributed.__version__}
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for name in source.split():
            assert (REPO / name).exists(), f"Dockerfile copies {name}, which is not in the repo"
    assert '".[postgres]"' in text  # psycopg for the PostgreSQL metadata DB
    assert f"-t {IMAGE}" in text


# ---- docker compose ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CLUSTER / "docker-compose.yml").read_text())
    return data


def test_compose_commands_env_and_images(compose: dict[str, Any], tmp_path: Path) -> None:
    services = compose["services"]
    facts = {
        name: check_command(svc["command"]) for name, svc in services.items() if "command" in svc
    }
    for name, svc in services.items():
        if name != "postgres":
            assert svc["image"] == IMAGE, name
            assert svc["build"]["dockerfile"] == "cluster/Dockerfile"
            assert (CLUSTER / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
        if "environment" in svc and name != "postgres":
            check_env(svc["environment"], tmp_path)

    sched = facts["dask-scheduler"]
    assert "airdask.dashboard.preload" in sched["preload"]
    ports = services["dask-scheduler"]["ports"]
    assert f"{sched['port']}:{sched['port']}" in ports
    assert f"{sched['dashboard_port']}:{sched['dashboard_port']}" in ports
    address = f"tcp://dask-scheduler:{sched['port']}"
    for name in ("dask-worker", "dask-worker-gpu"):
        assert facts[name]["address"] == address, name
    airdask_env = services["airdask-scheduler"]["environment"]
    assert airdask_env["AIRDASK__DASK__CLUSTER_ADDRESS"] == address
    assert airdask_env["AIRDASK__CORE__EXECUTOR"] == "DaskExecutor"

    # Resources name pools that airdask-init creates.
    pools = facts["airdask-init"]["pools"]
    assert pools
    for name in ("dask-worker", "dask-worker-gpu"):
        assert set(facts[name]["resources"]) <= set(pools), name


def test_compose_metadata_db_is_the_postgres_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg = services["postgres"]["environment"]
    users = [
        n
        for n, s in services.items()
        if "AIRDASK__DATABASE__SQL_ALCHEMY_CONN" in s.get("environment", {})
    ]
    assert set(users) >= {"airdask-init", "dask-worker", "dask-worker-gpu", "airdask-scheduler"}
    for name in users:
        url = make_url(services[name]["environment"]["AIRDASK__DATABASE__SQL_ALCHEMY_CONN"])
        assert url.drivername == "postgresql+psycopg"
        assert (url.host, url.port) == ("postgres", 5432)
        assert (url.username, url.password, url.database) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
    assert services["airdask-scheduler"]["depends_on"]["airdask-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_dags_folder_holds_dags_using_the_created_pools(compose: dict[str, Any]) -> None:
    svc = compose["services"]["airdask-scheduler"]
    folder = svc["environment"]["AIRDASK__CORE__DAGS_FOLDER"]
    (mount,) = [v for v in svc["volumes"] if v.split(":")[1] == folder]
    host = CLUSTER / mount.split(":")[0]
    pools = check_command(compose["services"]["airdask-init"]["command"])["pools"]
    bag = DagBag.from_path(host)
    assert bag.dags and not bag.import_errors, bag.import_errors
    for dag in bag.dags.values():
        used = {task.pool for task in dag.tasks}
        assert used <= {*pools, "default_pool"}, f"{dag.dag_id}: pools {used - set(pools)}"


# ---- kubernetes --------------------------------------------------------------------------


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kubernetes" / name).read_text()) if d]


def _env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"no Secret {ref['name']}"
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def test_kubernetes_resources_agree(tmp_path: Path) -> None:
    cluster_docs = _docs("daskcluster.yaml")
    app_docs = _docs("airdask-scheduler.yaml")
    secrets = {d["metadata"]["name"]: d["stringData"] for d in app_docs if d["kind"] == "Secret"}
    (dask_cluster,) = [d for d in cluster_docs if d["kind"] == "DaskCluster"]
    assert dask_cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = dask_cluster["metadata"]["name"]

    (scheduler,) = dask_cluster["spec"]["scheduler"]["spec"]["containers"]
    sched = check_command(scheduler["args"])
    assert "airdask.dashboard.preload" in sched["preload"]
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports == {"tcp-comm": sched["port"], "http-dashboard": sched["dashboard_port"]}
    for port in dask_cluster["spec"]["scheduler"]["service"]["ports"]:
        assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]

    workers = [dask_cluster["spec"]["worker"]]
    for group in (d for d in cluster_docs if d["kind"] == "DaskWorkerGroup"):
        assert group["spec"]["cluster"] == name
        workers.append(group["spec"]["worker"])
    resource_names: set[str] = set()
    for worker in workers:
        (container,) = worker["spec"]["containers"]
        assert container["image"] == IMAGE
        facts = check_command(container["args"])
        assert facts["address"] == "$(DASK_SCHEDULER_ADDRESS)"  # set by the operator
        resource_names |= set(facts["resources"])
        check_env(_env(container, secrets), tmp_path)
    assert scheduler["image"] == IMAGE

    (deployment,) = [d for d in app_docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1  # the metadata DB has one writer
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert container["image"] == IMAGE
        check_command(container["args"])
        env = _env(container, secrets)
        check_env(env, tmp_path)
        assert make_url(env["AIRDASK__DATABASE__SQL_ALCHEMY_CONN"]).drivername == (
            "postgresql+psycopg"
        )
    env = _env(pod["containers"][0], secrets)
    # The operator names the scheduler's Service <cluster name>-scheduler.
    assert env["AIRDASK__DASK__CLUSTER_ADDRESS"] == f"tcp://{name}-scheduler:{sched['port']}"

    # The same pools as the compose recipe.
    compose = yaml.safe_load((CLUSTER / "docker-compose.yml").read_text())
    pools = check_command(compose["services"]["airdask-init"]["command"])["pools"]
    assert resource_names <= set(pools)


# ---- slurm -------------------------------------------------------------------------------


def test_slurm_jobqueue_templates_start_airdask_workers(tmp_path: Path) -> None:
    config = yaml.safe_load((CLUSTER / "slurm" / "jobqueue.yaml").read_text())
    templates = config["jobqueue"]
    assert {"slurm", "slurm-gpu"} <= set(templates)
    for name, template in templates.items():
        module, *sub = template["worker-command"].split()
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module
        assert module == "airdask.cli"
        # What dask-jobqueue appends to `python -m <worker-command>`, then our extra args.
        jobqueue_args = ["tcp://10.0.0.1:8786", "--name", "dummy-name", "--nthreads", "4"]
        jobqueue_args += ["--memory-limit", "16GB", "--nanny", "--death-timeout", "60"]
        facts = check_command(["airdask", *sub, *jobqueue_args, *template["worker-extra-args"]])
        assert facts["resources"], name
        env = {}
        for line in template["job-script-prologue"]:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        check_env(env, tmp_path)
    py_compile.compile(str(CLUSTER / "slurm" / "start_cluster.py"), doraise=True)


def test_every_recipe_has_a_readme() -> None:
    for folder in ("", "local", "kubernetes", "slurm"):
        readme = CLUSTER / folder / "README.md"
        assert readme.exists() and len(readme.read_text().split()) > 40, readme
