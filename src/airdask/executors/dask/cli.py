"""``airdask dask worker`` and ``airdask dask info`` (DaskExecutor's CLI commands).

``worker`` starts ``dask worker ADDRESS`` whose resources are the pools table of the
configured metadata DB (``--resources`` adds to or overrides them); every option it does not
know is passed through to ``dask worker``.
"""

from __future__ import annotations

import os
import shlex
import sys

import click
from rich.console import Console
from rich.table import Table

from airdask.config import Config
from airdask.executors.dask.connect import attach_client, security_from_config
from airdask.store.queries import pool_resources_of


def _config() -> Config:
    from airdask.config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def parse_resources(text: str | None) -> dict[str, float]:
    """``"a=1,b=2.5"`` -> ``{"a": 1.0, "b": 2.5}``; a clear error for anything else."""
    out: dict[str, float] = {}
    for part in (text or "").replace(" ", ",").split(","):
        if not part:
            continue
        name, sep, amount = part.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(amount)
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: expected NAME=AMOUNT (e.g. gpu=1,io_pool=4)", param_hint="--resources"
            ) from None
    return out


def _address(config: Config, address: str | None) -> str:
    address = address or config.dask.cluster_address
    if not address:
        raise click.ClickException(
            "no Dask scheduler address: pass ADDRESS or set [dask] cluster_address"
        )
    return address


def worker_command(
    config: Config, address: str, resources: dict[str, float], extra: list[str]
) -> list[str]:
    """The ``dask worker`` command line (TLS files from ``[dask] tls_*`` when set)."""
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", address]
    if resources:
        argv += ["--resources", ",".join(f"{k}={v:g}" for k, v in sorted(resources.items()))]
    tls = config.dask
    if tls.tls_ca and tls.tls_cert and tls.tls_key:
        argv += ["--tls-ca-file", tls.tls_ca, "--tls-cert", tls.tls_cert]
        argv += ["--tls-key", tls.tls_key]
    return argv + extra


@click.group("dask")
def dask_group() -> None:
    """The Dask cluster behind DaskExecutor: start workers, show workers and resources."""


@dask_group.command(
    "worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("address", required=False)
@click.option("--resources", help="Extra resources NAME=N,... (override the pools table).")
@click.option("--dry-run", is_flag=True, help="Print the dask worker command line and exit.")
@click.pass_context
def dask_worker(
    ctx: click.Context, address: str | None, resources: str | None, dry_run: bool
) -> None:
    """Start a Dask worker offering every non-default pool as a resource.

    Options not listed here (--nthreads, --nworkers, --memory-limit, ...) go to dask worker.
    """
    config = _config()
    merged = {**pool_resources_of(config), **parse_resources(resources)}
    argv = worker_command(config, _address(config, address), merged, list(ctx.args))
    if dry_run:
        click.echo(shlex.join(argv))
        return
    os.execv(argv[0], argv)


@dask_group.command("info")
@click.argument("address", required=False)
def dask_info(address: str | None) -> None:
    """Scheduler address, dashboard link, and each worker with its resources."""
    config = _config()
    target = _address(config, address)
    try:
        client = attach_client(target, security=security_from_config(config), timeout=10)
    except Exception as exc:
        raise click.ClickException(f"cannot connect to Dask scheduler {target}: {exc}") from None
    try:
        info = client.scheduler_info(n_workers=-1)
        console = Console()
        console.print(f"scheduler: {info.get('address', target)}  (id {info.get('id')})")
        console.print(f"dashboard: {client.dashboard_link}")
        table = Table("worker", "name", "threads", "resources")
        for addr, worker in sorted(info.get("workers", {}).items()):
            res = worker.get("resources") or {}
            table.add_row(
                addr,
                str(worker.get("name", "")),
                str(worker.get("nthreads", "")),
                ", ".join(f"{k}={v:g}" for k, v in sorted(res.items())) or "-",
            )
        console.print(table)
    finally:
        client.close()
