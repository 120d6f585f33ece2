"""Start a SLURM-backed Dask cluster for airdask, print its address, keep it up.

    python cluster/slurm/start_cluster.py --jobs 4                       # jobqueue.slurm
    python cluster/slurm/start_cluster.py --config-name slurm-gpu --jobs 1
    python cluster/slurm/start_cluster.py --print-job-script             # check, submit nothing

Then point the airdask scheduler at the printed address:

    AIRDASK__DASK__CLUSTER_ADDRESS=<address> airdask scheduler

Job templates come from dask config (see jobqueue.yaml); the scheduler runs here with the
airdask dashboard page preloaded.
"""

from __future__ import annotations

import argparse
import threading

from airdask.dashboard.preload import PRELOAD


def main() -> None:
    from dask_jobqueue import SLURMCluster

    parser = argparse.ArgumentParser(description="Start a SLURM-backed Dask cluster for airdask")
    parser.add_argument("--config-name", default="slurm", help="jobqueue.<name> template")
    parser.add_argument("--jobs", type=int, default=2, help="worker jobs to submit")
    parser.add_argument("--port", type=int, default=8786, help="Dask scheduler port")
    parser.add_argument("--print-job-script", action="store_true", help="print it and exit")
    args = parser.parse_args()
    cluster = SLURMCluster(
        config_name=args.config_name,
        scheduler_options={"port": args.port, "preload": [PRELOAD], "dashboard_address": ":8787"},
    )
    if args.print_job_script:
        print(cluster.job_script())
        cluster.close()
        return
    cluster.scale(jobs=args.jobs)
    print(f"scheduler: {cluster.scheduler_address}  dashboard: {cluster.dashboard_link}")
    threading.Event().wait()


if __name__ == "__main__":
    main()
