"""The run context of one attempt, and Jinja templates rendered from it.

The scheduler builds the context when it queues an attempt (:func:`run_context`) and the
command carries it to the worker (workers have no database): a Python callable that asks
for it gets it as an argument (see :func:`call_kwargs`), an argv gets
``AIRDASK_CTX_LOGICAL_DATE`` and ``AIRDASK_CTX_CONF`` beside the key's variables
(:func:`context_env_extra`), and templated fields are rendered from it
(:func:`render_template`).

Context keys (Airflow's names): ``dag_id``, ``task_id``, ``run_id``, ``try_number``,
``map_index``, ``logical_date``, ``data_interval`` (a ``(start, end)`` tuple),
``data_interval_start``, ``data_interval_end``, ``conf`` (the run's conf as given),
``params`` (the DAG's params with conf applied), ``ds`` (``YYYY-MM-DD`` of the logical
date, UTC), ``ds_nodash``, ``ts`` (ISO 8601), ``ts_nodash``. Templates also get ``macros``.
Dates are timezone-aware UTC datetimes; the context holds only plain data (it is pickled
to workers that may not have airdask installed).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from airdask.commands import CONTEXT_ENV_PREFIX

#: The context keys a Python callable may receive.
CONTEXT_KEYS = (
    "dag_id",
    "task_id",
    "run_id",
    "try_number",
    "map_index",
    "logical_date",
    "data_interval",
    "data_interval_start",
    "data_interval_end",
    "conf",
    "params",
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
)


def run_context(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    try_number: int,
    map_index: int,
    logical_date: datetime,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    conf: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The context of one attempt (see the module docstring for its keys)."""
    start = data_interval_start or logical_date
    end = data_interval_end or start
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "try_number": try_number,
        "map_index": map_index,
        "logical_date": logical_date,
        "data_interval": (start, end),
        "data_interval_start": start,
        "data_interval_end": end,
        "conf": dict(conf or {}),
        "params": dict(params or {}),
        "ds": logical_date.strftime("%Y-%m-%d"),
        "ds_nodash": logical_date.strftime("%Y%m%d"),
        "ts": logical_date.isoformat(),
        "ts_nodash": logical_date.strftime("%Y%m%dT%H%M%S"),
    }


#: The last few runs' environment variables, by the identity of their conf dict (a pass
#: queues many attempts of one run; their contexts share the run's conf object).
_ENV_MEMO: dict[int, tuple[Any, tuple[datetime, ...], dict[str, str]]] = {}
_ENV_MEMO_MAX = 64


def context_env_extra(context: Mapping[str, Any]) -> dict[str, str]:
    """The variables the attempt's key does not give (see :func:`airdask.commands.context_env`)."""
    conf = context["conf"]
    dates = (context["logical_date"], context["data_interval_start"], context["data_interval_end"])
    found = _ENV_MEMO.get(id(conf))
    if found is not None and found[0] is conf and found[1] == dates:
        return dict(found[2])
    env = {
        f"{CONTEXT_ENV_PREFIX}LOGICAL_DATE": dates[0].isoformat(),
        f"{CONTEXT_ENV_PREFIX}DATA_INTERVAL_START": dates[1].isoformat(),
        f"{CONTEXT_ENV_PREFIX}DATA_INTERVAL_END": dates[2].isoformat(),
        f"{CONTEXT_ENV_PREFIX}CONF": json.dumps(conf, default=str),
    }
    if len(_ENV_MEMO) >= _ENV_MEMO_MAX:
        _ENV_MEMO.clear()
    _ENV_MEMO[id(conf)] = (conf, dates, env)  # holding conf keeps its id from being reused
    return dict(env)


@functools.lru_cache(maxsize=1024)
def _asks_for(func: Callable[..., Any]) -> tuple[str | None, frozenset[str]]:
    """How ``func`` asks for the context ("context", "kwargs" or None) and its named
    parameters; cached, since a pass may queue thousands of attempts of one callable."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return None, frozenset()
    var = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    named = frozenset(n for n, p in parameters.items() if p.kind not in var)
    if "context" in named:
        return "context", named
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return "kwargs", named
    return None, named


def call_kwargs(
    func: Callable[..., Any], context: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """``kwargs`` with the context added the way ``func`` asks for it.

    A parameter named ``context`` gets the whole context dict; otherwise a ``**kwargs``
    catch-all gets each context key as a keyword argument (Airflow's convention), the
    task's own ``op_kwargs`` winning over a context key of the same name. A callable that
    asks for neither (or whose signature cannot be read) gets ``kwargs`` unchanged.
    """
    try:
        mode, named = _asks_for(func)
    except TypeError:  # an unhashable callable: not cached
        mode, named = _asks_for.__wrapped__(func)
    if mode == "context":
        return {**kwargs, "context": dict(context)} if "context" not in kwargs else dict(kwargs)
    if mode == "kwargs":
        extra = {k: v for k, v in context.items() if k not in named}
        return {**extra, **kwargs}
    return dict(kwargs)


# ---- templates ---------------------------------------------------------------------------


class TemplateError(ValueError):
    """A templated field that cannot be rendered; the message names the field and the name."""


def _ds_add(ds: str, days: int) -> str:
    """``ds`` plus ``days`` days (Airflow's ``macros.ds_add``)."""
    return (datetime.strptime(ds, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def _ds_format(ds: str, input_format: str, output_format: str) -> str:
    """``ds`` re-formatted (Airflow's ``macros.ds_format``)."""
    return datetime.strptime(ds, input_format).strftime(output_format)


#: What ``{{ macros.* }}`` offers in templates.
MACROS = SimpleNamespace(
    ds_add=_ds_add,
    ds_format=_ds_format,
    datetime=datetime,
    timedelta=timedelta,
    json=SimpleNamespace(dumps=json.dumps, loads=json.loads),
)


class _Named(dict[str, Any]):
    """A dict whose missing keys are reported by its name (``conf has no key 'n'``). The
    name is the class's: an instance attribute would hide a key of the same name."""


class _Conf(_Named):
    pass


class _Params(_Named):
    pass


_LABELS = {_Conf: "conf", _Params: "params"}


@functools.cache
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    class Undefined(StrictUndefined):
        @property
        def _undefined_message(self) -> str:
            obj, name = self._undefined_obj, self._undefined_name
            if isinstance(obj, _Named):
                keys = ", ".join(sorted(obj)) or "none"
                return f"{_LABELS[type(obj)]} has no key {name!r} (it has: {keys})"
            message: str = super()._undefined_message
            return message

    return SandboxedEnvironment(
        undefined=Undefined, keep_trailing_newline=True, autoescape=False, cache_size=400
    )


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Any:
    """The compiled template (compiling costs milliseconds; rendering, microseconds)."""
    return _environment().from_string(text)


def is_template(text: str) -> bool:
    """Whether ``text`` has Jinja markup (anything else is used as it is, unrendered)."""
    return "{{" in text or "{%" in text or "{#" in text


def render_template(text: str, context: Mapping[str, Any], *, field: str, where: str) -> str:
    """``text`` rendered with ``context`` (Jinja, sandboxed, undefined names are errors).

    :param field: the templated field (``bash_command``), named in errors.
    :param where: the task (``task 'load' of DAG 'etl'``), named in errors.
    :raises TemplateError: a syntax error or an undefined name, in one line.
    """
    if not is_template(text):
        return text
    from jinja2 import TemplateError as JinjaError

    namespace = dict(context)
    namespace["conf"] = _Conf(context.get("conf") or {})
    namespace["params"] = _Params(context.get("params") or {})
    namespace["macros"] = MACROS
    try:
        return str(_compiled(text).render(namespace))
    except JinjaError as exc:
        lineno = getattr(exc, "lineno", None)
        line = f" (line {lineno})" if lineno and "\n" in text else ""
        raise TemplateError(
            f"template {field} of {where} cannot be rendered{line}: {exc.message or exc}"
        ) from None
    except Exception as exc:  # a filter or macro that raised
        raise TemplateError(
            f"template {field} of {where} cannot be rendered: {type(exc).__name__}: {exc}"
        ) from None


__all__ = [
    "CONTEXT_KEYS",
    "MACROS",
    "TemplateError",
    "call_kwargs",
    "context_env_extra",
    "is_template",
    "render_template",
    "run_context",
]
