"""DAG-level params: typed defaults a run's ``conf`` may override, checked at trigger time.

::

    with DAG("etl", params={"n": 10, "day": Param(type=str, description="YYYY-MM-DD")}):
        ...

A plain default is a :class:`Param` whose type is the default's (``10`` is an ``int``
param); :class:`Param` states the type when the default does not show it (``None``, or no
default: the param is then required). Only JSON's types are offered, because ``--conf`` is
JSON: ``str``, ``int``, ``float`` (an ``int`` is accepted and made a float), ``bool``,
``list``, ``dict``. Airflow's ``Param`` takes a JSON Schema; that is more than most DAGs
need and brings a dependency, so a type per key is what is checked here.

:func:`resolve_params` is called before a run is written: an unknown key, a wrong type or a
missing required param is a :class:`ParamError` of one line, and no row is written. A DAG
that declares no params takes any ``conf`` (its tasks read ``conf`` as they like).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The types a param may have (what JSON can carry).
PARAM_TYPES: tuple[type, ...] = (str, int, float, bool, list, dict)


class ParamError(ValueError):
    """A param defined wrongly, or a conf that does not fit the DAG's params."""


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: The default of a required param.
NO_DEFAULT: Any = _NoDefault()


class Param:
    """One DAG param.

    :param default: the value when ``conf`` does not give one; leave it out to make the
        param required.
    :param type: one of :data:`PARAM_TYPES`; ``None`` takes the default's type (and any
        type when the default is ``None``).
    :param description: shown in the docs of the DAG, for those who trigger it.
    """

    def __init__(
        self,
        default: Any = NO_DEFAULT,
        *,
        type: type | None = None,
        description: str | None = None,
    ) -> None:
        if type is None and default is not NO_DEFAULT and default is not None:
            type = _type_of(default)
        if type is not None and type not in PARAM_TYPES:
            names = ", ".join(t.__name__ for t in PARAM_TYPES)
            raise ParamError(f"a param's type is one of {names}, got {type!r}")
        self.default = default
        self.type = type
        self.description = description

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT

    def __repr__(self) -> str:
        kind = self.type.__name__ if self.type else "any"
        return f"Param({self.default!r}, type={kind})"

    def check(self, value: Any, where: str) -> Any:
        """``value`` if it fits (an int made a float for a float param); else ParamError."""
        wanted = self.type
        if wanted is None or (value is None and self.default is None):
            return value
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
            return value
        raise ParamError(
            f"{where} must be {wanted.__name__}, got {type(value).__name__} {value!r}"[:300]
        )


def _type_of(value: Any) -> type:
    for candidate in (bool, int, float, str, list, dict):  # bool before int: a bool is an int
        if isinstance(value, candidate):
            return candidate
    names = ", ".join(t.__name__ for t in PARAM_TYPES)
    raise ParamError(f"a param's default must be one of {names}, got {type(value).__name__}")


def normalise_params(dag_id: str, params: Mapping[str, Any] | None) -> dict[str, Param]:
    """The DAG's params as :class:`Param` objects (plain defaults wrapped), defaults checked."""
    out: dict[str, Param] = {}
    for name, value in (params or {}).items():
        if not isinstance(name, str) or not name:
            raise ParamError(f"DAG {dag_id!r}: param names are non-empty strings, got {name!r}")
        try:
            param = value if isinstance(value, Param) else Param(value)
            if not param.required:
                param.check(param.default, f"the default of param {name!r}")
        except ParamError as exc:
            raise ParamError(f"DAG {dag_id!r}: param {name!r}: {exc}") from None
        out[name] = param
    return out


def resolve_params(
    dag_id: str, params: Mapping[str, Param], conf: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The run's params: each default, overridden by ``conf``; ParamError on a bad conf."""
    conf = conf or {}
    if not params:
        return {}
    unknown = sorted(set(conf) - set(params))
    if unknown:
        raise ParamError(
            f"DAG {dag_id!r}: unknown param {', '.join(map(repr, unknown))} in conf "
            f"(params: {', '.join(params)})"
        )
    values: dict[str, Any] = {}
    for name, param in params.items():
        if name in conf:
            values[name] = param.check(conf[name], f"DAG {dag_id!r}: param {name!r}")
        elif param.required:
            raise ParamError(
                f"DAG {dag_id!r}: param {name!r} is required (it has no default): "
                f"pass it with --conf '{{\"{name}\": ...}}'"
            )
        else:
            values[name] = param.default
    return values


__all__ = ["NO_DEFAULT", "PARAM_TYPES", "Param", "ParamError", "normalise_params", "resolve_params"]
