"""Attempts as JSON messages, and back (ADR 0007).

A message is the runner's :class:`~airdask.runner.TaskSpec` with its one binary field,
``payload`` (a PythonCommand's cloudpickle), as base64 text: Celery sends it with the
``json`` serializer and workers accept nothing else, so what reaches a worker is data, never
code, unless ``[celery] allow_pickle`` is on at *both* ends. An argv command never needs it.
"""

from __future__ import annotations

import base64
from typing import Any, cast

from airdask.commands import CommandError
from airdask.runner import TaskSpec

#: Bumped when the shape of a message changes (a worker refuses one it does not know).
MESSAGE_VERSION = 1

PICKLE_REFUSED = (
    "a PythonCommand travels as cloudpickle, which [celery] allow_pickle forbids "
    "(anyone who can write to the broker could run code on the workers); use an argv "
    "command, or set allow_pickle = true on the scheduler and the workers"
)


def to_message(spec: TaskSpec, *, allow_pickle: bool) -> dict[str, Any]:
    """The JSON-safe message of ``spec``; :class:`CommandError` for a PythonCommand when
    pickles are not allowed."""
    payload = spec["payload"]
    if payload is not None and not allow_pickle:
        raise CommandError(PICKLE_REFUSED)
    message: dict[str, Any] = {k: v for k, v in spec.items() if k != "payload"}
    message["payload_b64"] = None if payload is None else base64.b64encode(payload).decode()
    message["version"] = MESSAGE_VERSION
    return message


def from_message(message: Any, *, allow_pickle: bool) -> TaskSpec:
    """The spec of a message a worker received; ``ValueError`` naming what is wrong."""
    if not isinstance(message, dict):
        raise ValueError(f"an airdask message is a JSON object, got {type(message).__name__}")
    version = message.get("version")
    if version != MESSAGE_VERSION:
        raise ValueError(
            f"airdask message version {version!r}, this worker understands {MESSAGE_VERSION}"
        )
    encoded = message.get("payload_b64")
    if encoded is not None and not allow_pickle:
        raise ValueError("this worker refuses pickled commands: " + PICKLE_REFUSED)
    argv = message.get("argv")
    if encoded is None and not (
        isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
    ):
        raise ValueError("an airdask message needs argv (a non-empty list of strings)")
    fields = {k: v for k, v in message.items() if k not in ("payload_b64", "version")}
    fields["payload"] = None if encoded is None else base64.b64decode(encoded)
    missing = set(TaskSpec.__required_keys__) - set(fields)
    if missing:
        raise ValueError(f"an airdask message lacks {', '.join(sorted(missing))}")
    return cast(TaskSpec, fields)
