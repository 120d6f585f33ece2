"""airdask: Apache Airflow's executor model, standalone, with Dask as the cluster engine."""

from airdask.commands import Command, CommandError, PythonCommand
from airdask.state import DagRunState, TaskInstanceKey, TaskInstanceState

__version__ = "0.1.0"

__all__ = [
    "Command",
    "CommandError",
    "DagRunState",
    "PythonCommand",
    "TaskInstanceKey",
    "TaskInstanceState",
    "__version__",
]
