"""airdask as an Airflow 3 provider, and the executor's behaviour on bad input, checked with
the real Airflow of ``.venv-airflow`` (each check a subprocess there: this suite's own venv
has no Airflow, which is also how ``import airdask`` is shown not to need it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from airdask.airflow import outcomes
from airdask.airflow import worker_script as ws
from airdask.airflow.provider import OPTIONS, get_provider_info
from airdask.airflow.settings import Settings
from airflow_stack import WORKLOAD_WRITER
from airflow_venv import VenvError, ensure_venv
from conftest import skip_or_fail

# The first test to need .venv-airflow may build it (about two minutes).
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def af_bin() -> Path:
    try:
        return ensure_venv()
    except VenvError as exc:
        skip_or_fail(f"cannot build the Airflow virtualenv: {exc}")
        raise


@pytest.fixture
def af_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DASK_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__EXECUTOR="airdask.airflow.DaskExecutor",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API_AUTH__JWT_SECRET="provider-test-secret",
    )
    yield env


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# ---- no Airflow needed ---------------------------------------------------------------


def test_import_airdask_never_imports_airflow() -> None:
    code = (
        "import sys, airdask, airdask.executors, airdask.airflow, airdask.airflow.provider\n"
        "import airdask.airflow.settings, airdask.airflow.outcomes, airdask.cli\n"
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_option_is_typed_described_defaulted_and_exemplified() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airdask" and info["executors"] == [
        "airdask.airflow.DaskExecutor"
    ]
    options = info["config"]["dask"]["options"]
    assert set(options) == set(OPTIONS)
    for name, option in options.items():
        assert option["type"] in ("string", "boolean", "integer", "float"), name
        assert option["description"] and option["version_added"], name
        assert "default" in option and option["example"], name
    assert Settings.read(_Conf({})).cluster_address == OPTIONS["cluster_address"].default


class _Conf:
    """Airflow's ``conf.get(section, key, fallback=...)`` over a dict (only the signature)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, section: str, key: str, fallback: str | None = None) -> str | None:
        return self.values.get(key, fallback)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"connect_timeout": "soon"}, "[dask] connect_timeout must be a float, got 'soon'"),
        ({"pool_resources": "maybe"}, "[dask] pool_resources must be auto, strict or off"),
        ({"cluster_address": ""}, "[dask] cluster_address is empty"),
    ],
)
def test_a_bad_setting_is_named(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Settings.read(_Conf(values))


class _Info:
    def __init__(self, kind: str, exit_code: int | None = None, reason: str = "r") -> None:
        self.kind, self.exit_code, self.reason = kind, exit_code, reason

    def __str__(self) -> str:
        return self.reason


def test_outcomes_never_report_an_end_the_process_may_not_have_reached() -> None:
    assert outcomes.verdict("failed", _Info("connection_lost")).action == outcomes.HOLD
    held = outcomes.verdict("failed", _Info("exit_code", ws.EXIT_ALREADY_RUNNING))
    assert held.action == outcomes.HOLD
    failed = outcomes.verdict("failed", _Info("exit_code", 1))
    assert failed.action == outcomes.FAILED and "the task failed" in failed.reason
    token = outcomes.verdict(
        "failed", _Info("exit_code", ws.EXIT_TOKEN_REFUSED), logged_reason="expired"
    )
    assert token.reason == "the API server refused the workload's token: expired"
    assert outcomes.needs_log(_Info("exit_code", ws.EXIT_NO_TASK_SDK))
    assert not outcomes.needs_log(_Info("exit_code", 1))
    no_worker = outcomes.verdict("failed", _Info("no_worker", reason="no worker offers queue 'q'"))
    assert "dask worker --resources" in no_worker.reason


def test_a_worker_without_airflow_says_so(tmp_path: Path) -> None:
    workload = tmp_path / "workload.json"
    workload.write_text("{}")
    script = Path(ws.__file__)
    done = subprocess.run(
        [sys.executable, "-I", str(script), "--server", "http://127.0.0.1:9/execution/",
         "--json-path", str(workload)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == ws.EXIT_NO_TASK_SDK
    reason = outcomes.reason_from_log(done.stderr.splitlines())
    assert reason and "task SDK cannot be imported" in reason and "worker_python" in reason


# ---- with the real Airflow --------------------------------------------------------------


@pytest.mark.slow
def test_airflow_lists_the_provider_its_executor_and_its_config(
    af_bin: Path, af_env: dict[str, str]
) -> None:
    airflow = str(af_bin / "airflow")
    listed = run([airflow, "providers", "list", "-o", "json"], af_env)
    providers = {p["package_name"]: p for p in json.loads(listed)}
    assert "airdask" in providers
    executors = run([airflow, "providers", "executors", "-o", "json"], af_env)
    assert "airdask.airflow.DaskExecutor" in executors
    config = run(
        [airflow, "config", "list", "--section", "dask", "--include-descriptions",
         "--include-examples", "--show-values", "--defaults"],
        af_env,
    )  # fmt: skip
    for name, option in OPTIONS.items():
        assert f"{name} = {option.default}".rstrip() in config, name
        assert option.description.split(".")[0][:60] in " ".join(config.split()), name
    commands = run([airflow, "dask", "--help"], af_env)
    assert "check" in commands


EXECUTOR_PROBE = textwrap.dedent(
    """
    import json, sys, time, uuid
    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airdask.airflow import DaskExecutor

    executor = DaskExecutor()
    executor.start()  # an unreachable cluster is logged, not raised
    ti = TaskInstanceDTO(
        id=uuid.uuid4(), task_id="t", dag_id="d", run_id="r", try_number=1,
        dag_version_id=uuid.uuid4(), pool_slots=1, priority_weight=1, queue="default",
    )
    workload = ExecuteTask(
        ti=ti, dag_rel_path="d.py", token="x", log_path=None,
        bundle_info=BundleInfo(name="dags-folder"),
    )
    executor.queued_tasks[ti.key] = workload
    from airflow.executors.workloads.callback import CallbackDTO, ExecuteCallback
    callback = ExecuteCallback(
        callback=CallbackDTO(id=str(uuid.uuid4()), fetch_method="import_path",
                             data={"path": "builtins.print", "kwargs": {}}),
        dag_rel_path="d.py", token="x", log_path=None, bundle_info=BundleInfo(name="dags-folder"),
    )
    executor.queue_workload(callback, session=None)  # a deadline callback
    started = time.monotonic()
    executor.heartbeat()  # must not raise either
    events = executor.get_event_buffer()
    print(json.dumps({
        "events": {str(getattr(k, "task_id", "callback")): [str(s), str(i)]
                   for k, (s, i) in events.items()},
        "running": len(executor.running),
        "seconds": time.monotonic() - started,
    }))
    """
)


@pytest.mark.slow
def test_an_unreachable_cluster_fails_the_task_with_the_reason_not_the_scheduler(
    af_bin: Path, af_env: dict[str, str]
) -> None:
    env = dict(af_env, AIRFLOW__DASK__CLUSTER_ADDRESS="tcp://127.0.0.1:9",
               AIRFLOW__DASK__CONNECT_TIMEOUT="2")  # fmt: skip
    out = run([str(af_bin / "python"), "-c", EXECUTOR_PROBE], env)
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result["events"]) == {"t", "callback"} and result["running"] == 0
    for state, reason in result["events"].values():
        assert state == "failed"
        assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in reason
        assert "[dask] cluster_address" in reason


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_fork_server_kills_a_workload_whose_client_or_worker_is_gone(
    af_bin: Path, af_env: dict[str, str], tmp_path: Path
) -> None:
    import socket

    from proc_support import pid_alive, wait_for

    workload = tmp_path / "workload.json"
    run([str(af_bin / "python"), "-c", WORKLOAD_WRITER, str(workload)], af_env)
    # An Execution API that accepts connections and never answers: the workload hangs.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/execution/"
    af_env = dict(af_env, AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="600")  # hang, never give up
    address = str(tmp_path / "fs.sock")
    script = str(Path(ws.__file__))
    server = subprocess.Popen(
        [str(af_bin / "python"), script, "--serve", address], stdin=subprocess.PIPE,
        env=af_env, start_new_session=True,
    )  # fmt: skip
    client_env = dict(af_env, **{ws.FORKSERVER_ENV: address})

    def client() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(af_bin / "python"), script, "--server", url, "--json-path", str(workload)],
            env=client_env, start_new_session=True,
        )  # fmt: skip

    try:
        wait_for(lambda: os.path.exists(address), timeout=60, what="the fork server's socket")
        for junk in (b"", b"not json\n"):  # a probe, a confused client: it serves on
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(address)
                probe.sendall(junk)
        first = client()
        wait_for(lambda: len(children_of(server.pid)) == 1, timeout=240, what="a forked workload")
        (leader,) = children_of(server.pid)
        wait_for(
            lambda: bool(children_of(leader)), timeout=60, what="the workload under its leader"
        )
        family = [leader, *children_of(leader)]
        first.kill()  # as the runner does on revoke or timeout
        first.wait()
        wait_for(
            lambda: not any(pid_alive(p) for p in family), timeout=10,
            what="the orphaned workload to die",
        )  # fmt: skip
        second = client()
        wait_for(lambda: len(children_of(server.pid)) == 1, timeout=60, what="a second workload")
        (child,) = children_of(server.pid)
        assert server.stdin is not None
        server.stdin.close()  # the worker died
        try:
            wait_for(lambda: not pid_alive(child), timeout=30, what="the workload of a dead worker")
        except AssertionError as exc:  # say where it hangs
            stat = Path(f"/proc/{child}/stat").read_text(errors="replace")
            wchan = Path(f"/proc/{child}/wchan").read_text(errors="replace")
            raise AssertionError(
                f"{exc}: leader {stat} in {wchan}; server {server.poll()}"
            ) from exc
        assert server.wait(timeout=10) == 0
        second.kill()
        second.wait()
    finally:
        for proc in (server,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        silent.close()
